"""Targeted generation (``--worst N --baseline RESULTS_FOLDER``): the cases a baseline model segmented worst.

The baseline is an nnU-Net training output folder: each ``fold_*/validation/summary.json``
holds the per-case metrics of that fold's cross-validation predictions. A case's
score is its mean Dice over the foreground labels (or regions). A case whose
Dice is undefined for every label (no foreground in reference or prediction)
has nothing to get wrong and ranks as perfect (1.0). Ties are broken by case id,
so the selection is deterministic.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from nnunet_synth.errors import SynthError


def baseline_scores(results_folder: str | os.PathLike, file_ending: str) -> dict[str, float]:
    """case id -> mean foreground Dice of the baseline's validation prediction."""
    scores: dict[str, float] = {}
    for per_case in validation_scores_by_fold(results_folder, file_ending).values():
        scores.update(per_case)
    return scores


def validation_scores_by_fold(results_folder: str | os.PathLike, file_ending: str) -> dict[str, dict[str, float]]:
    """fold name (``"0"``, ``"all"``) -> {case id -> mean foreground Dice} of that fold's validation prediction."""
    from nnunetv2.evaluation.evaluate_predictions import load_summary_json

    folder = Path(results_folder)
    if not folder.is_dir():
        raise SynthError(f"--baseline {folder}: no such folder (expected an nnU-Net training output with fold_*/validation)")
    summaries = sorted(folder.glob("fold_*/validation/summary.json"))
    if not summaries:
        raise SynthError(f"--baseline {folder}: no fold_*/validation/summary.json; run the baseline's "
                         f"cross-validation (nnUNetv2_train ... FOLD) first")
    by_fold: dict[str, dict[str, float]] = {}
    seen: set[str] = set()
    for path in summaries:
        try:
            per_case = load_summary_json(str(path))["metric_per_case"]
        except (ValueError, KeyError, TypeError) as e:
            raise SynthError(f"{path}: not an nnU-Net summary.json ({type(e).__name__}: {e})") from None
        scores = by_fold.setdefault(path.parent.parent.name[len("fold_"):], {})
        for entry in per_case:
            case = _case_id(entry["reference_file"], file_ending, path)
            if case in seen:
                raise SynthError(f"{path}: case '{case}' is validated in more than one fold of {folder}")
            seen.add(case)
            dice = [m["Dice"] for m in entry["metrics"].values() if not _is_nan(m.get("Dice"))]
            scores[case] = sum(dice) / len(dice) if dice else 1.0
    return by_fold


def worst_cases(results_folder: str | os.PathLike, n: int, file_ending: str,
                dataset_cases: list[str]) -> tuple[list[str], dict[str, float]]:
    """The ``n`` lowest-scoring cases (worst first) and their scores."""
    if n < 1:
        raise SynthError(f"--worst must be at least 1, got {n}")
    scores = baseline_scores(results_folder, file_ending)
    unknown = sorted(set(scores) - set(dataset_cases))
    if unknown:
        raise SynthError(f"--baseline {results_folder}: case(s) {', '.join(unknown[:5])} are not in the real dataset; "
                         f"was the baseline trained on another dataset?")
    if n > len(scores):
        raise SynthError(f"--worst {n}: the baseline {results_folder} validated only {len(scores)} case(s)")
    ranked = sorted(scores, key=lambda case: (scores[case], case))[:n]
    return ranked, {case: round(scores[case], 6) for case in ranked}


def _case_id(reference_file: str, file_ending: str, where: Path) -> str:
    name = os.path.basename(reference_file)
    if not name.endswith(file_ending):
        raise SynthError(f"{where}: reference file {name} does not end with the dataset's {file_ending}")
    return name[: -len(file_ending)]


def _is_nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
