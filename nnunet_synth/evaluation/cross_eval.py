"""Cross-dataset evaluation: several trained models, several test sets, compared case by case.

``run_cross_eval`` checks the models (``prediction``) and the test sets
(``testsets``), maps the test labels if asked, predicts what is not predicted
yet, scores every prediction with the metrics of ``nnunet-synth evaluate``,
compares every model with the baseline (``comparison``) and writes the report
(``report``). Outputs in OUTPUT: per_case.csv, summary.json, comparisons.csv,
report.md, plots/*.png, labels/TEST/ (mapped labels), predictions/MODEL/TEST/
(with each pair's summary.json).

nnU-Net is imported inside the function, so ``nnunet-synth cross-eval --help``
does not load torch.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from nnunet_synth.atomic import atomic_path, read_json, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation import report
from nnunet_synth.evaluation.comparison import compare_with_baseline
from nnunet_synth.evaluation.evaluate import evaluate_folders, label_setup, summary_to_json
from nnunet_synth.evaluation.prediction import ModelSpec, check_model, pick_device, predict_missing
from nnunet_synth.evaluation.testsets import check_channels, check_test_labels, map_labels, open_test_set

CSV_METRICS = ("Dice", "IoU", "Precision", "Recall", "HD95", "HD95_pooled", "ASSD", "TP", "FP", "FN", "TN",
               "n_pred", "n_ref", "empty_pred", "empty_ref")


def label_name(dataset_json: dict, key) -> str:
    """The dataset.json name of a label value or region tuple (the key nnU-Net's summaries use)."""
    for name, value in dataset_json["labels"].items():
        if value == key or (isinstance(value, list) and tuple(value) == tuple(key if isinstance(key, tuple) else (key,))):
            return name
    return str(key)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
            writer.writeheader()
            writer.writerows(rows)


def _check_names(models: dict, test_sets: dict, baseline: str) -> None:
    if len(models) < 2:
        raise SynthError("cross-eval needs at least two models (a baseline and one to compare)")
    if baseline not in models:
        raise SynthError(f"--baseline {baseline}: no model of that name (models: {', '.join(models)})")
    if not test_sets:
        raise SynthError("cross-eval needs at least one test set (--test NAME=DATASET_OR_FOLDER)")
    for what, names in (("model", models), ("test set", test_sets)):
        for n in names:
            # Names become folder and file names (predictions/MODEL/TEST, plots).
            if report.safe_name(n) != n:
                raise SynthError(f"{what} name '{n}': use letters, digits, '-', '_' and '.' only")


def _predict_and_score(specs: dict, folders: dict, tests: dict, output: Path, device, use_mirroring: bool,
                       reference_json: dict, dj_path: Path, num_processes: int, progress: bool):
    """Per test set and model: the means for summary.json, the per_case.csv rows, and
    ``values[test][model][label][case]`` (a case's metric dict) for the comparisons and plots."""
    results, per_case_rows, values = {}, [], {}
    for t, test in tests.items():
        results[t], values[t] = {}, {}
        for m, spec in specs.items():
            pred_folder = output / "predictions" / m / t
            predict_missing(m, spec, folders[m], test, pred_folder, device, use_mirroring)
            summary = evaluate_folders(test.labels, pred_folder, pred_folder / "summary.json", dj_path,
                                       num_processes=num_processes, progress=progress, cases=list(test.cases))
            as_json = summary_to_json(summary)
            results[t][m] = {k: as_json[k] for k in ("mean", "foreground_mean", "n_valid", "empty_counts", "n_cases")}
            results[t][m]["summary_file"] = str(pred_folder / "summary.json")
            values[t][m] = {}
            for entry in summary["metric_per_case"]:
                for key, metrics in entry["metrics"].items():
                    values[t][m].setdefault(key, {})[entry["case"]] = metrics
                    per_case_rows.append({"test_set": t, "model": m, "case": entry["case"],
                                          "label": label_name(reference_json, key),
                                          **{k: metrics[k] for k in CSV_METRICS}})
    return results, per_case_rows, values


def run_cross_eval(models: dict, test_sets: dict, output_dir: str | os.PathLike, baseline: str,
                   label_map: dict[int, int] | None = None, device: str = "auto", use_mirroring: bool = True,
                   num_processes: int = 1, n_resamples: int = 10000, confidence: float = 0.95, seed: int = 0,
                   n_examples: int = 3, progress: bool = True) -> dict:
    """Predict, evaluate, compare and report; returns the summary written to OUTPUT/summary.json.

    ``models``: name -> ``ModelSpec`` or "DATASET:TRAINER:PLANS:CONFIGURATION:FOLDS".
    ``test_sets``: name -> dataset id, name or folder (see ``nnunet_synth.evaluation.testsets``).
    ``baseline``: the model name every other model is compared with.
    ``label_map``: test label value -> model label value, applied before anything is checked or scored.
    """
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.json_export import recursive_fix_for_json_export

    _check_names(models, test_sets, baseline)
    specs = {n: s if isinstance(s, ModelSpec) else ModelSpec.parse(s, n) for n, s in models.items()}
    folders = {n: check_model(n, s) for n, s in specs.items()}
    dataset_jsons = {n: read_json(folders[n] / "dataset.json") for n in specs}
    reference_json = dataset_jsons[baseline]
    for n, dj in dataset_jsons.items():
        if dj["labels"] != reference_json["labels"] or dj["file_ending"] != reference_json["file_ending"]:
            raise SynthError(f"model '{n}': labels or file ending in {folders[n] / 'dataset.json'} differ from "
                             f"the baseline's; models compared case by case must predict the same labels")
    file_ending = reference_json["file_ending"]
    label_map = dict(label_map or {})
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    tests = {t: open_test_set(t, where, file_ending) for t, where in test_sets.items()}
    for test in tests.values():
        check_channels(test, len(reference_json["channel_names"]))
    example_file = next(iter(next(iter(tests.values())).cases.values()))[0]
    reader_writer = determine_reader_writer_from_dataset_json(reference_json, example_file, verbose=False)()
    if label_map:
        tests = {t: map_labels(test, label_map, output / "labels" / t, reader_writer) for t, test in tests.items()}
    _, _, allowed = label_setup(reference_json)
    for test in tests.values():
        check_test_labels(test, allowed, reader_writer)
    torch_device = pick_device(device)
    results, per_case_rows, values = _predict_and_score(specs, folders, tests, output, torch_device, use_mirroring,
                                                        reference_json, folders[baseline] / "dataset.json",
                                                        num_processes, progress)
    _write_csv(output / "per_case.csv", per_case_rows)
    label_names = {key: label_name(reference_json, key) for key in values[next(iter(tests))][baseline]}

    comparisons = compare_with_baseline(values, baseline, label_names, n_resamples, confidence, seed)
    _write_csv(output / "comparisons.csv", comparisons)
    images = report.write_plots(values, baseline, label_names, tests, output, reader_writer, n_examples)

    summary = {
        "baseline": baseline,
        "models": {m: dict(s.identity(), description=s.describe(), folder=str(folders[m])) for m, s in specs.items()},
        "test_sets": {t: {"images": str(x.images), "labels": str(x.labels), "n_cases": len(x.cases),
                          "source": str(test_sets[t])} for t, x in tests.items()},
        "label_map": {str(k): v for k, v in sorted(label_map.items())},
        "label_names": {str(key): name for key, name in label_names.items()},
        "device": str(torch_device), "use_mirroring": use_mirroring,
        "n_resamples": n_resamples, "confidence": confidence, "seed": seed,
        "results": results, "comparisons": comparisons,
    }
    recursive_fix_for_json_export(summary)
    write_json_atomic(output / "summary.json", summary)
    report.write_report_md(output / "report.md", summary, comparisons, images)
    return summary
