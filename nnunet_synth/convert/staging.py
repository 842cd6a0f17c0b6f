"""Convert into a hidden folder next to the target, and rename it only when everything worked.

A conversion either produces a complete, verified raw dataset or leaves
nothing behind: the cases are written to ``.DatasetXXX_Name.partial-PID``, the
folder is checked with nnU-Net's ``verify_dataset_integrity`` and then renamed
to ``DatasetXXX_Name`` in one step.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_synth.atomic import write_json_atomic
from nnunet_synth.convert.problems import CaseProblem, ConversionFailed, ProblemLog
from nnunet_synth.errors import SynthError
from nnunet_synth.raw_dataset import other_dataset_with_id

SPLITS_FILE = "splits_final.json"
PATIENTS_FILE = "patients.json"


@dataclass(frozen=True)
class Case:
    """One output case: its id, ``"Tr"`` or ``"Ts"``, the source files it comes from, its patient."""

    case_id: str
    split: str
    sources: tuple[str, ...]
    patient: str | None = None
    info: dict = field(default_factory=dict, hash=False, compare=False)


def _convert_one(fn, case: Case, folder: str):
    # Module level, so that a spawned worker can unpickle it.
    try:
        warnings = fn(case, folder) or []
        return case, None, list(warnings)
    except CaseProblem as e:
        return case, e, []


def _convert_star(args):
    return _convert_one(*args)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StagedDataset:
    def __init__(self, raw_root, dataset_id: int, name: str, source, allow_skip: bool = False,
                 num_processes: int = 1, verify: bool = True, preprocessed_root=None):
        if not 1 <= int(dataset_id) <= 999:
            raise SynthError(f"dataset id {dataset_id} is outside 1..999")
        if not name or any(c in name for c in "/\\ ") or name.startswith("."):
            raise SynthError(f"dataset name {name!r} must be a plain word without spaces or slashes")
        self.raw_root = Path(raw_root)
        self.dataset_id = int(dataset_id)
        self.name = f"Dataset{self.dataset_id:03d}_{name}"
        self.final = self.raw_root / self.name
        self.folder = self.raw_root / f".{self.name}.partial-{os.getpid()}"
        self.source = Path(source)
        self.allow_skip = allow_skip
        self.num_processes = max(1, int(num_processes))
        self.verify = verify
        self.preprocessed_root = Path(preprocessed_root) if preprocessed_root else None
        self.problems = ProblemLog()
        self.converted: list[Case] = []
        self.skipped: list[Case] = []
        self.splits: list[dict] | None = None
        self.counts: tuple[int, int] | None = None

    # -- life cycle -------------------------------------------------------
    def __enter__(self) -> "StagedDataset":
        if self.final.exists():
            raise SynthError(f"{self.final}: already exists; delete it or choose another dataset id")
        taken = other_dataset_with_id(self.dataset_id, self.name, self.raw_root)
        if taken is not None:
            raise SynthError(f"{taken.parent}: dataset id {self.dataset_id} is taken by {taken.name}; "
                             f"choose another id with -d")
        if self.raw_root.is_dir():
            for stale in self.raw_root.glob(f".{self.name}.partial-*"):
                pid = stale.name.rsplit("-", 1)[-1]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    shutil.rmtree(stale)  # left by a killed run
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        try:
            self._finish()
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def _finish(self) -> None:
        if not (self.folder / "dataset.json").is_file():
            raise RuntimeError("the converter did not write dataset.json")
        for sub in ("imagesTs", "labelsTs"):
            if not any((self.folder / sub).iterdir()):
                (self.folder / sub).rmdir()
        preprocessed_splits = None
        if self.splits is not None and self.preprocessed_root is not None:
            preprocessed_splits = self.preprocessed_root / self.name / SPLITS_FILE
            if preprocessed_splits.exists():
                raise SynthError(f"{preprocessed_splits}: already exists (from an earlier dataset with this id); "
                                 f"delete it or choose another dataset id")
        if self.verify:
            self._verify()
        os.rename(self.folder, self.final)
        if preprocessed_splits is not None:
            write_json_atomic(preprocessed_splits, self.splits)
        self._print_summary(preprocessed_splits)

    def _verify(self) -> None:
        # Local: staging is imported by `nnunet-synth convert --help`, which must not pay for torch.
        from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

        try:
            verify_dataset_integrity(str(self.folder), self.num_processes)
        except (AssertionError, RuntimeError, FileNotFoundError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SynthError(f"{self.final}: nnU-Net's verify_dataset_integrity failed ({first}); "
                             f"nothing was written") from None

    def _print_summary(self, preprocessed_splits) -> None:
        n_tr, n_ts = self.counts or (self.num_training, len(self.converted) - self.num_training)
        print(f"wrote {self.final}: {n_tr} training and {n_ts} test case(s)"
              + (f"; skipped {len(self.skipped)} case(s)" if self.skipped else ""))
        if self.splits is not None:
            where = str(preprocessed_splits) if preprocessed_splits else "nowhere (nnUNet_preprocessed is not set)"
            print(f"patient-grouped {len(self.splits)}-fold split: {self.final / SPLITS_FILE}, copied to {where}")
            if preprocessed_splits is None:
                print(f"  copy it to $nnUNet_preprocessed/{self.name}/{SPLITS_FILE} before training")
        if self.problems.problems or self.problems.warnings:
            print(self.problems.report(), file=sys.stderr)

    # -- used by converters ------------------------------------------------
    @property
    def num_training(self) -> int:
        return sum(c.split == "Tr" for c in self.converted)

    def convert(self, fn, cases: list[Case], desc: str | None = None) -> list[Case]:
        """Run ``fn(case, folder)`` for every case; collect problems; stop unless skipping is allowed.

        ``fn`` must be a module-level function (it runs in spawned workers when
        ``num_processes > 1``). It raises CaseProblem for bad source data and
        returns a list of warnings (or None).
        """
        from tqdm import tqdm

        seen: dict[str, Case] = {}
        todo = []
        for case in cases:
            if case.split not in ("Tr", "Ts"):
                raise ValueError(f"case {case.case_id}: split must be 'Tr' or 'Ts'")
            if case.case_id in seen:
                self.problems.add(case.sources[0], f"gives the same case id as {seen[case.case_id].sources[0]}",
                                  case.case_id)
                self.skipped.append(case)
                continue
            seen[case.case_id] = case
            todo.append(case)
        # Problems found while listing the source do not stop here: the user gets one complete list.
        bar = dict(total=len(todo), desc=desc or f"converting {self.name}", unit="case", file=sys.stderr)
        if self.num_processes == 1:
            results = (_convert_one(fn, c, str(self.folder)) for c in tqdm(todo, **bar))
            self._collect(results)
        else:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(self.num_processes) as pool:
                work = [(fn, c, str(self.folder)) for c in todo]
                self._collect(tqdm(pool.imap_unordered(_convert_star, work), **bar))
        if self.problems.problems and not self.allow_skip:
            self._fail()
        if not any(c.split == "Tr" for c in self.converted):
            if self.problems.problems:
                print(self.problems.report(), file=sys.stderr)
            raise SynthError(f"{self.source}: no training case could be converted "
                             f"({len(cases)} found, {len(self.skipped)} skipped); check the layout with --help")
        self.converted.sort(key=lambda c: (c.split, c.case_id))
        return list(self.converted)

    def _collect(self, results) -> None:
        for case, problem, warnings in results:
            for w in warnings:
                self.problems.warn(case.sources[0], w, case.case_id)
            if problem is None:
                self.converted.append(case)
            else:
                self.problems.add(problem.path, problem.message, case.case_id)
                self.skipped.append(case)
                self._remove_case_files(case)

    def _remove_case_files(self, case: Case) -> None:
        # A case that failed half-way must not leave an image without its label.
        for p in (self.folder / f"images{case.split}").glob(f"{case.case_id}_[0-9][0-9][0-9][0-9].*"):
            p.unlink()
        for p in (self.folder / f"labels{case.split}").glob(f"{case.case_id}.*"):
            p.unlink()

    def record_counts(self, n_training: int, n_test: int) -> None:
        """For converters that write the cases with another tool (MSD): the counts for the summary."""
        self.counts = (int(n_training), int(n_test))

    def check_problems(self) -> None:
        """Stop with the problems found so far unless skipping is allowed (for checks after ``convert``)."""
        if self.problems.problems and not self.allow_skip:
            self._fail()

    def _fail(self) -> None:
        print(self.problems.report(), file=sys.stderr)
        raise ConversionFailed(self.source, self.problems.problems)

    def write_splits(self, splits: list[dict], patients: dict[str, str] | None = None) -> None:
        """Keep ``splits_final.json`` (and the case -> patient table) in the raw dataset folder.

        The copy for nnU-Net goes to ``$nnUNet_preprocessed/DatasetXXX_Name/``
        once the dataset has been verified and renamed.
        """
        self.splits = splits
        write_json_atomic(self.folder / SPLITS_FILE, splits)
        if patients is not None:
            write_json_atomic(self.folder / PATIENTS_FILE, dict(sorted(patients.items())))
