"""Score a folder of predictions against references: nnU-Net's ``summary.json`` plus surface metrics.

``evaluate_folders`` is what ``nnunet-synth evaluate`` runs (its --help has the
options and an example). The output extends nnU-Net's ``summary.json`` with
Precision, Recall, HD95, HD95_pooled and ASSD (mm), per-case empty flags and
``n_valid``; ``nnunet_synth.evaluation.metrics`` has the definitions and edge
cases.

Means over cases are taken in ``nnunet_synth.evaluation.aggregate``. nnU-Net,
and the metrics that use it, are imported inside the functions, so
``nnunet-synth evaluate --help`` does not load torch.
"""
from __future__ import annotations

import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnunet_synth.atomic import read_json, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.files import (WRITTEN_BY, WRITTEN_BY_KEY, check_output_file, read_seg,
                                           write_failed)
from nnunet_synth.labels import check_label_values

GEOMETRY_TOLERANCE = 1e-4  # relative, on spacing; absolute (mm) on origin and direction


def find_dataset_json(ref_folder: Path, pred_folder: Path, dataset_json: str | os.PathLike | None) -> Path:
    if dataset_json is not None:
        path = Path(dataset_json)
        if not path.is_file():
            raise SynthError(f"{path}: dataset.json not found")
        return path
    for candidate in (ref_folder.parent / "dataset.json", pred_folder / "dataset.json"):
        if candidate.is_file():
            return candidate
    raise SynthError(f"no dataset.json in {ref_folder.parent} or {pred_folder}; pass it with -djfile")


def label_setup(dataset_json: dict) -> tuple[list, int | None, set[int]]:
    """(labels or regions to evaluate, ignore label, every value a label file may hold)."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    lm = LabelManager(dataset_json["labels"], regions_class_order=dataset_json.get("regions_class_order"))
    evaluated = list(lm.foreground_regions if lm.has_regions else lm.foreground_labels)
    allowed = {int(v) for v in lm.all_labels}
    if lm.has_ignore_label:
        allowed.add(int(lm.ignore_label))
    return evaluated, lm.ignore_label, allowed


def list_cases(folder: Path, file_ending: str) -> dict[str, Path]:
    """case id -> file, for the files of ``folder`` that end in ``file_ending`` (temporary files skipped)."""
    if not folder.is_dir():
        raise SynthError(f"{folder}: no such folder")
    return {p.name[: -len(file_ending)]: p for p in sorted(folder.iterdir())
            if p.name.endswith(file_ending) and not p.name.startswith(".")}


def _check_geometry(case: str, ref: tuple, pred: tuple, ref_path: Path, pred_path: Path) -> None:
    (ref_seg, ref_props), (pred_seg, pred_props) = ref, pred
    if ref_seg.shape != pred_seg.shape:
        raise SynthError(f"case '{case}': prediction {pred_path} has shape {pred_seg.shape[1:]}, "
                         f"reference {ref_path} has {ref_seg.shape[1:]}")
    if not np.allclose(ref_props["spacing"], pred_props["spacing"], rtol=GEOMETRY_TOLERANCE, atol=0):
        raise SynthError(f"case '{case}': prediction {pred_path} has spacing {tuple(pred_props['spacing'])}, "
                         f"reference {ref_path} has {tuple(ref_props['spacing'])}")
    ref_itk, pred_itk = ref_props.get("sitk_stuff"), pred_props.get("sitk_stuff")
    if ref_itk is not None and pred_itk is not None:
        for key in ("origin", "direction"):
            if not np.allclose(ref_itk[key], pred_itk[key], atol=GEOMETRY_TOLERANCE, rtol=0):
                raise SynthError(f"case '{case}': prediction {pred_path} has {key} {tuple(pred_itk[key])}, "
                                 f"reference {ref_path} has {tuple(ref_itk[key])}")


def evaluate_case(case: str, ref_path: Path, pred_path: Path, reader_writer, labels_or_regions: list,
                  ignore_label: int | None, allowed: set[int]) -> dict:
    """Read, check and score one case; entries as in nnU-Net's ``metric_per_case`` plus ``case``."""
    from nnunet_synth.evaluation.metrics import case_metrics

    ref = read_seg(reader_writer, ref_path, f"case '{case}'", "reference")
    pred = read_seg(reader_writer, pred_path, f"case '{case}'", "prediction")
    for path, (seg, _) in ((ref_path, ref), (pred_path, pred)):
        check_label_values(seg, allowed, where=f"case '{case}': {path}", allowed_from="dataset.json")
    _check_geometry(case, ref, pred, ref_path, pred_path)
    metrics = case_metrics(pred[0][0], ref[0][0], ref[1]["spacing"], labels_or_regions, ignore_label)
    return {"case": case, "reference_file": str(ref_path), "prediction_file": str(pred_path), "metrics": metrics}


def _evaluate_case_star(job: tuple) -> dict:
    return evaluate_case(*job)


def summary_to_json(summary: dict) -> dict:
    """Label/region keys as strings, the way nnU-Net's save_summary_json writes them."""
    from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key
    from nnunetv2.utilities.json_export import recursive_fix_for_json_export

    out = dict(summary)
    for key in ("mean", "spread", "n_valid", "empty_counts"):
        out[key] = {label_or_region_to_key(k): v for k, v in summary[key].items()}
    out["metric_per_case"] = [dict(c, metrics={label_or_region_to_key(k): v for k, v in c["metrics"].items()})
                              for c in summary["metric_per_case"]]
    recursive_fix_for_json_export(out)
    return out


def evaluate_folders(ref_folder: str | os.PathLike, pred_folder: str | os.PathLike,
                     output_file: str | os.PathLike | None = None, dataset_json: str | os.PathLike | None = None,
                     num_processes: int = 1, progress: bool = True, cases: list[str] | None = None,
                     chill: bool = False, overwrite: bool = False) -> dict:
    """Score every reference case (or ``cases``) against the prediction of the same name.

    Returns the summary (label keys as ints/tuples); writes it atomically to
    ``output_file`` as JSON when given. An existing ``output_file`` that
    nnunet_synth did not write is refused unless ``overwrite``. A missing
    prediction is an error, unless ``chill`` (nnU-Net's name): then the
    predicted cases are scored and the others listed in ``missing_predictions``.
    """
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    from nnunet_synth.evaluation.aggregate import aggregate

    ref_folder, pred_folder = Path(ref_folder), Path(pred_folder)
    if output_file is not None:
        output_file = Path(output_file)
        check_output_file(output_file, overwrite)  # before scoring, so a refusal costs nothing
    dj_path = find_dataset_json(ref_folder, pred_folder, dataset_json)
    dj = read_json(dj_path)
    if not isinstance(dj, dict):
        raise SynthError(f"{dj_path}: expected a JSON object")
    for key in ("labels", "file_ending"):
        if key not in dj:
            raise SynthError(f"{dj_path}: missing key '{key}'")
    ending = dj["file_ending"]
    refs, preds = list_cases(ref_folder, ending), list_cases(pred_folder, ending)
    if cases is not None:
        missing_ref = sorted(set(cases) - set(refs))
        if missing_ref:
            raise SynthError(f"{ref_folder}: no reference for case(s) {', '.join(missing_ref)}")
        refs = {c: refs[c] for c in sorted(cases)}
    if not refs:
        raise SynthError(f"{ref_folder}: no reference files ending in {ending}")
    missing = [c for c in refs if c not in preds]
    if missing and not chill:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise SynthError(f"case '{missing[0]}': missing prediction {pred_folder / (missing[0] + ending)} "
                         f"({len(missing)} of {len(refs)} case(s) unpredicted: {shown}); pass --chill to score "
                         f"the predicted cases only")
    if len(missing) == len(refs):
        raise SynthError(f"{pred_folder}: none of the {len(refs)} reference case(s) has a prediction ending in {ending}")
    refs = {c: p for c, p in refs.items() if c in preds}
    labels_or_regions, ignore_label, allowed = label_setup(dj)
    reader_writer = determine_reader_writer_from_dataset_json(dj, str(next(iter(refs.values()))), verbose=False)()
    jobs = [(c, refs[c], preds[c], reader_writer, labels_or_regions, ignore_label, allowed) for c in refs]
    bar = dict(total=len(jobs), desc=f"evaluate {pred_folder.name}", disable=not progress, unit="case")
    if num_processes > 1 and len(jobs) > 1:
        # spawn, as nnU-Net does: forking a process that holds torch threads can hang.
        with get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
            per_case = list(tqdm(pool.imap(_evaluate_case_star, jobs), **bar))
    else:
        per_case = [evaluate_case(*job) for job in tqdm(jobs, **bar)]
    summary = {"metric_per_case": per_case, **aggregate(per_case, labels_or_regions),
               "dataset_json": str(dj_path), "missing_predictions": missing,
               "unmatched_predictions": sorted(set(preds) - set(refs)),
               "spacing_unit": "mm", WRITTEN_BY_KEY: WRITTEN_BY}
    if output_file is not None:
        try:
            write_json_atomic(output_file, summary_to_json(summary), sort_keys=True)
        except OSError as e:
            raise write_failed(output_file, e) from None
    return summary
