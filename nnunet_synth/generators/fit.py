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
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from nnunet_synth.atomic import read_json, same_json, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.generators import registry
from nnunet_synth.generators.source_cases import check_case_ids, read_source_case
from nnunet_synth.generators.training_record import training_record
from nnunet_synth.manifest import TRAINING_CASES_FILE
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
    case_ids, fold, split_source = training_cases(real, job)
    model_dir = Path(job.model_dir).resolve()
    record = training_record(job.generator, real, fold, split_source, case_ids)
    record_file = model_dir / TRAINING_CASES_FILE
    if record_file.is_file() and not same_json(read_json(record_file, "delete it or choose another -o folder"),
                                               record):
        raise SynthError(f"{record_file}: this model folder belongs to another training run "
                         f"(other generator, dataset or cases); choose another -o folder")
    labels = sorted(int(v) for v in real.label_manager.all_labels)
    cases = [read_source_case(real, case_id).normalised
             for case_id in tqdm(case_ids, desc=f"reading {real.name}", unit="case")]

    created = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    # Written first, so an interrupted fit that is rerun with other cases is refused above.
    write_json_atomic(record_file, record, sort_keys=True)
    try:
        generator_class.fit(cases, labels, model_dir, settings)
    except BaseException:
        if created and [p.name for p in model_dir.iterdir()] == [TRAINING_CASES_FILE]:
            # The generator refused before writing anything: leave nothing behind.
            record_file.unlink()
            model_dir.rmdir()
        raise
    print(f"trained {job.generator} on {len(cases)} case(s) of {real.name}"
          f"{'' if fold is None else f' (fold {fold})'}; model folder {model_dir}")
    return model_dir
