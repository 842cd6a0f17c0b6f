"""Cross-validation folds and the leakage rules of DESIGN.md.

- Validation holds real cases only.
- A synthetic case whose source case is in a fold's validation set is never in
  that fold's training set.
- A generator trained on a fold's validation cases makes that fold leaky: it is
  reported, and refused unless the user explicitly allows it.

Real folds are nnU-Net's: the real dataset's ``splits_final.json`` when it has
one, otherwise exactly the split nnU-Net would create
(``generate_crossval_split(sorted ids, seed=12345, n_splits=5)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnunet_synth.atomic import read_json
from nnunet_synth.errors import SynthError

SPLITS_FILE = "splits_final.json"


def load_splits(path: str | Path) -> list[dict]:
    path = Path(path)
    splits = read_json(path)
    if not isinstance(splits, list) or not all(
            isinstance(s, dict) and isinstance(s.get("train"), list) and isinstance(s.get("val"), list) for s in splits):
        raise SynthError(f"{path}: expected a list of {{'train': [...], 'val': [...]}} folds")
    return splits


def default_folds(case_ids) -> list[dict]:
    """The 5-fold split nnU-Net creates when a dataset has no splits_final.json."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    if len(case_ids) < 5:
        raise SynthError(f"nnU-Net's default 5-fold split needs at least 5 cases, got {len(case_ids)}; "
                         f"write a splits_final.json into the dataset's nnUNet_preprocessed folder")
    return [{"train": [str(c) for c in s["train"]], "val": [str(c) for c in s["val"]]}
            for s in generate_crossval_split(sorted(case_ids), seed=12345, n_splits=5)]


def real_folds(dataset_name: str, case_ids, preprocessed_root: str | Path | None = None) -> tuple[list[dict], str]:
    """(folds, where they came from) for a real dataset."""
    if preprocessed_root is not None:
        path = Path(preprocessed_root) / dataset_name / SPLITS_FILE
        if path.is_file():
            folds = load_splits(path)
            unknown = sorted({c for f in folds for c in f["train"] + f["val"]} - set(case_ids))
            if unknown:
                raise SynthError(f"{path}: names case(s) that are not in {dataset_name}: {', '.join(unknown[:5])}")
            return folds, str(path)
    return default_folds(case_ids), "nnU-Net's default 5-fold split (seed 12345)"


def fold_training_cases(folds: list[dict], fold: int | str) -> list[str]:
    if fold == "all":
        return sorted({c for f in folds for c in f["train"] + f["val"]})
    fold = int(fold)
    if not 0 <= fold < len(folds):
        raise SynthError(f"fold {fold} does not exist (the split has folds 0 to {len(folds) - 1})")
    return list(folds[fold]["train"])


def leaked_folds(folds: list[dict], trained_on) -> dict[int, list[str]]:
    """fold -> validation cases that a generator was trained on (only leaky folds).

    This is the leakage rule; everything that refuses a leaky fold decides with it.
    """
    trained_on = set(trained_on)
    return {i: sorted(set(f["val"]) & trained_on) for i, f in enumerate(folds) if set(f["val"]) & trained_on}


def leaks_by_generator(folds: list[dict], trained_on_by_generator: dict[str, list[str]]) -> dict[str, dict[int, list[str]]]:
    """generator id -> its leaked folds, for the generators that leak into any fold.

    ``nnunet-synth expand`` calls it on every fold to report and refuse;
    nnUNetTrainerSynthExpand calls it on the one fold it is about to train, so
    a split that was edited after expansion is judged by the same rule.
    """
    leaks = {gid: leaked_folds(folds, trained_on) for gid, trained_on in trained_on_by_generator.items()}
    return {gid: per_fold for gid, per_fold in leaks.items() if per_fold}


def expanded_folds(folds: list[dict], synthetic_sources: dict[str, str], synthetic_only: bool = False,
                   refused=()) -> list[dict]:
    """Add each synthetic case to the training set of every fold that trains on its source case.

    With ``synthetic_only`` the training sets hold synthetic cases only (the
    lung study's first scenario); validation always stays real. A ``refused``
    fold (a generator saw its validation cases) keeps its real training cases
    and gets no synthetic case at all, so the split file itself is leak-free,
    whichever trainer reads it.
    """
    out = []
    for i, f in enumerate(folds):
        train_real = set(f["train"])
        synthetic = [] if i in refused else sorted(c for c, src in synthetic_sources.items() if src in train_real)
        train = synthetic if synthetic_only and i not in refused else sorted(f["train"]) + synthetic
        out.append({"train": train, "val": sorted(f["val"])})
    return out


@dataclass
class SplitProblem:
    fold: int
    message: str


def check_expanded_folds(folds: list[dict], real_case_ids, synthetic_sources: dict[str, str]) -> list[SplitProblem]:
    """Every broken placement rule, fold by fold (an empty list means the cases are placed safely).

    Generator leakage is not a placement rule; ``leaks_by_generator`` decides it.
    """
    real = set(real_case_ids)
    problems = []
    for i, f in enumerate(folds):
        val = set(f["val"])
        unknown = sorted((set(f["train"]) | val) - real - set(synthetic_sources))
        if unknown:
            problems.append(SplitProblem(i, f"unknown case(s) {', '.join(unknown[:5])}"))
        synthetic_in_val = sorted(val & set(synthetic_sources))
        if synthetic_in_val:
            problems.append(SplitProblem(i, f"synthetic case(s) in validation: {', '.join(synthetic_in_val[:5])}"))
        leaked = sorted(c for c in f["train"] if synthetic_sources.get(c) in val)
        if leaked:
            problems.append(SplitProblem(i, f"synthetic case(s) in training whose source case is validated in this "
                                            f"fold: {', '.join(leaked[:5])}"))
    return problems
