"""Fit a generator on the real training cases of one cross-validation fold (``nnunet-synth fit``).

The folds are nnU-Net's (``splits.real_folds``). Only the fold's training cases
are used, so the fold's validation cases stay unseen by the generator (fold
``all`` uses every case: then no fold's validation is clean, and ``expand``
reports it). The model folder gets ``training_cases.json`` first, so an
interrupted fit that is rerun with other cases is refused.

Python API::

    from nnunet_synth.generators.fit import FitJob, fit_generator
    from nnunet_synth.generators.patch_ddpm.settings import PatchDDPMFitOptions

    fit_generator(FitJob("patch-ddpm", dataset="901", model_dir="models/f0", fold="0"),
                  PatchDDPMFitOptions(train_steps=2000))
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from nnunet_synth.atomic import check_writable, read_json, same_json, write_bytes_atomic, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.generators import registry
from nnunet_synth.generators.source_cases import check_case_ids, read_source_case
from nnunet_synth.generators.training_record import training_record
from nnunet_synth.manifest import TRAINING_CASES_FILE, WEIGHT_SUFFIXES
from nnunet_synth.raw_dataset import RawDataset
from nnunet_synth.splits import fold_training_cases, real_folds


@dataclass(frozen=True)
class FitJob:
    """What to train on and where to save it; the generator's own settings come separately."""

    generator: str
    dataset: str                    # the real raw dataset: id, name or folder
    model_dir: str | os.PathLike
    fold: str | None = None         # "0".."4" or "all"; exactly one of fold and cases
    cases: tuple[str, ...] | None = None


def training_cases(real: RawDataset, job: FitJob) -> tuple[list[str], object, str | None]:
    """(case ids, fold, where the split came from)."""
    if (job.fold is None) == (job.cases is None):
        raise SynthError("give exactly one of --fold and --cases")
    if job.cases is not None:
        return check_case_ids(real, list(job.cases), "--cases"), None, None
    fold = job.fold if job.fold == "all" else _fold_number(job.fold)
    try:
        folds, where = real_folds(real.name, real.case_ids(), os.environ.get("nnUNet_preprocessed") or None)
    except ValueError as e:  # nnU-Net's default split needs at least 5 cases
        raise SynthError(f"{real.folder}: cannot make nnU-Net's default folds ({e}); "
                         f"give the training cases with --cases") from None
    cases = fold_training_cases(folds, fold)
    if not cases:
        raise SynthError(f"fold {fold} of {real.name} has no training cases ({where})")
    return cases, fold, where


def _fold_number(text) -> int:
    try:
        return int(text)
    except ValueError:
        raise SynthError(f"--fold {text!r}: expected a fold number or 'all'") from None


def fit_generator(job: FitJob, settings) -> Path:
    """Train ``job.generator`` with ``settings`` (its ``fit_settings`` dataclass); returns the model folder."""
    generator_class = registry.get(job.generator)
    if not isinstance(settings, generator_class.fit_settings):
        raise TypeError(f"{job.generator} takes {generator_class.fit_settings.__name__} settings, "
                        f"got {type(settings).__name__}")
    real = RawDataset.open(job.dataset)
    real.check_files()
    case_ids, fold, split_source = training_cases(real, job)
    model_dir = Path(job.model_dir).resolve()
    if model_dir.exists() and not model_dir.is_dir():
        raise SynthError(f"-o {model_dir}: is a file, not a model folder; choose another -o folder")
    check_writable(model_dir, "-o ")
    record = training_record(job.generator, real, fold, split_source, case_ids)
    record_file = model_dir / TRAINING_CASES_FILE
    if record_file.is_file() and not same_json(read_json(record_file, "delete it or choose another -o folder"),
                                               record):
        raise SynthError(f"{record_file}: this model folder belongs to another training run "
                         f"(other generator, dataset or cases); choose another -o folder")
    labels = sorted(int(v) for v in real.label_manager.all_labels)
    with tqdm(case_ids, desc=f"reading {real.name}", unit="case") as bar:
        cases = [read_source_case(real, case_id).normalised for case_id in bar]

    created = not model_dir.exists()
    before = FolderSnapshot.take(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    # Written first, so an interrupted fit that is rerun with other cases is refused above.
    write_json_atomic(record_file, record, sort_keys=True)
    try:
        generator_class.fit(cases, labels, model_dir, settings)
    except BaseException as e:
        if isinstance(e, SynthError):
            # The generator refused; if it wrote no weights yet, a refused command changes nothing.
            before.restore_if_no_weights(model_dir)
        if created and [p.name for p in model_dir.iterdir()] in ([], [TRAINING_CASES_FILE]):
            # Nothing was trained: leave no folder behind.
            shutil.rmtree(model_dir)
        raise
    print(f"trained {job.generator} on {len(cases)} case(s) of {real.name}"
          f"{'' if fold is None else f' (fold {fold})'}; model folder {model_dir}")
    return model_dir


@dataclass
class FolderSnapshot:
    """A model folder before ``fit``: its files' sizes and times, the content of the small ones, its folders."""

    stats: dict[str, tuple[int, int]]
    contents: dict[str, bytes]
    folders: set[str]

    @classmethod
    def take(cls, folder: Path, small: int = 1 << 20) -> "FolderSnapshot":
        stats, contents, folders = {}, {}, set()
        for p in sorted(folder.rglob("*")) if folder.is_dir() else []:
            rel = str(p.relative_to(folder))
            if p.is_dir():
                folders.add(rel)
            elif p.is_file():
                st = p.stat()
                stats[rel] = (st.st_size, st.st_mtime_ns)
                if st.st_size <= small:
                    contents[rel] = p.read_bytes()
        return cls(stats, contents, folders)

    def restore_if_no_weights(self, folder: Path) -> bool:
        """Undo every change to ``folder`` if no weight file changed (and each change can be undone)."""
        now = FolderSnapshot.take(folder, small=0)
        changed = {rel for rel in now.stats.keys() | self.stats.keys() if self.stats.get(rel) != now.stats.get(rel)}
        if any(rel.endswith(WEIGHT_SUFFIXES) for rel in changed):
            return False  # training produced something: keep it, a rerun may resume from it
        if any(rel in self.stats and rel not in self.contents for rel in changed):
            return False  # a large file changed that cannot be put back
        for rel in sorted(changed):
            if rel in self.stats:
                write_bytes_atomic(folder / rel, self.contents[rel])
            else:
                (folder / rel).unlink()
        for rel in sorted(now.folders - self.folders, key=lambda r: -len(Path(r).parts)):
            if not any((folder / rel).iterdir()):
                (folder / rel).rmdir()
        return True
