"""Cross-dataset evaluation: several trained models, several test sets, compared case by case.

``run_cross_eval`` checks the models (``prediction``) and the test sets
(``testsets``) before it writes anything, maps the test labels if asked,
predicts what is not predicted yet (each model's predictor built once, for all
test sets; one progress bar line per model and test set, nnU-Net's own output
in OUTPUT/predict.log), scores every prediction with the metrics of
``nnunet-synth evaluate``, compares every model with the baseline
(``comparison``) and writes the report (``report``). Outputs in OUTPUT:
per_case.csv, summary.json, comparisons.csv, report.md, predict.log,
plots/*.png, labels/TEST/ (mapped labels), predictions/MODEL/TEST/ (with each
pair's summary.json). summary.json and report.md record the command line,
package versions, device and date (``run_record``).

nnU-Net is imported inside the function, so ``nnunet-synth cross-eval --help``
does not load torch.
"""
from __future__ import annotations

import csv
import os
import platform
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tqdm import tqdm

from nnunet_synth.atomic import atomic_path, check_writable, read_json, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation import report
from nnunet_synth.evaluation.comparison import compare_with_baseline
from nnunet_synth.evaluation.evaluate import evaluate_folders, label_setup, summary_to_json
from nnunet_synth.evaluation.prediction import (ModelPredictor, ModelSpec, PredictionSettings, check_model,
                                                pick_device)
from nnunet_synth.evaluation.testsets import check_channels, check_test_labels, map_labels, open_test_set

RECORDED_PACKAGES = ("nnunet_synth", "nnunetv2", "torch", "numpy", "scipy", "SimpleITK", "monai", "matplotlib")
LOG_NAME = "predict.log"

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


def run_record(command: str | None, device) -> dict:
    """What a reader needs to reproduce the numbers: command line, date, package versions, device."""
    import torch

    versions = {}
    for package in RECORDED_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
                      f"{torch.get_num_threads()} torch threads)"
    return {"command": command or "run_cross_eval(...) from Python", "date": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "python": platform.python_version(), "versions": versions, "device": str(device),
        "device_name": device_name}


def _predict_all(predictors: dict[str, ModelPredictor], tests: dict, output: Path, progress: bool) -> int:
    """Every model on every test set, models outer, so each predictor is built once; returns how many were new."""
    new = 0
    for i, (m, predictor) in enumerate(predictors.items(), start=1):
        for t, test in tests.items():
            out = output / "predictions" / m / t
            done = sum((out / f"{c}{test.file_ending}").is_file() for c in test.cases)
            if predictor.log is not None:
                print(f"--- model {m} on test set {t}: {len(test.cases) - done} case(s) to predict",
                      file=predictor.log, flush=True)
            # The bar writes to the terminal's stderr, taken now: nnU-Net's output is redirected to the log.
            with tqdm(total=len(test.cases), initial=done, unit="case", file=sys.stderr, disable=not progress,
                      desc=f"model {i}/{len(predictors)} ({m}) on test {t}") as bar:
                new += predictor.predict_missing(test, out, on_case=lambda _: bar.update())
    return new


def _score(models: list[str], tests: dict, output: Path, reference_json: dict, dj_path: Path, num_processes: int,
           progress: bool):
    """Per test set and model: the means for summary.json, the per_case.csv rows, and
    ``values[test][model][label][case]`` (a case's metric dict) for the comparisons and plots."""
    results, per_case_rows, values = {}, [], {}
    for t, test in tests.items():
        results[t], values[t] = {}, {}
        for m in models:
            pred_folder = output / "predictions" / m / t
            summary = evaluate_folders(test.labels, pred_folder, pred_folder / "summary.json", dj_path,
                                       num_processes=num_processes, progress=progress, cases=list(test.cases))
            as_json = summary_to_json(summary)
            results[t][m] = {k: as_json[k] for k in ("mean", "spread", "foreground_mean", "n_valid", "empty_counts",
                                                     "n_cases")}
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
                   label_map: dict[int, int] | None = None, prediction: PredictionSettings | None = None,
                   num_processes: int = 1, n_resamples: int = 10000, confidence: float = 0.95, seed: int = 0,
                   n_examples: int = 3, progress: bool = True, command: str | None = None,
                   alpha: float = 0.05) -> dict:
    """Predict, evaluate, compare and report; returns the summary written to OUTPUT/summary.json.

    ``models``: name -> ``ModelSpec`` or "DATASET:TRAINER:PLANS:CONFIGURATION:FOLDS".
    ``test_sets``: name -> dataset id, name or folder (see ``nnunet_synth.evaluation.testsets``).
    ``baseline``: the model name every other model is compared with.
    ``label_map``: test label value -> model label value, applied before anything is checked or scored.
    ``prediction``: device, mirroring, checkpoint and tile step of nnU-Net's predictor.
    ``command``: the command line, recorded in summary.json and report.md.
    ``alpha``: the significance level the small-n warning is judged against.
    """
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.json_export import recursive_fix_for_json_export

    settings = prediction or PredictionSettings()
    settings.check()
    _check_names(models, test_sets, baseline)
    specs = {n: s if isinstance(s, ModelSpec) else ModelSpec.parse(s, n) for n, s in models.items()}
    folders = {n: check_model(n, s, settings.checkpoint) for n, s in specs.items()}
    dataset_jsons = {n: read_json(folders[n] / "dataset.json") for n in specs}
    reference_json = dataset_jsons[baseline]
    for n, dj in dataset_jsons.items():
        if dj["labels"] != reference_json["labels"] or dj["file_ending"] != reference_json["file_ending"]:
            raise SynthError(f"model '{n}': labels or file ending in {folders[n] / 'dataset.json'} differ from "
                             f"the baseline's; models compared case by case must predict the same labels")
    file_ending = reference_json["file_ending"]
    label_map = dict(label_map or {})
    tests = {t: open_test_set(t, where, file_ending) for t, where in test_sets.items()}
    for test in tests.values():
        check_channels(test, len(reference_json["channel_names"]))
    example_file = next(iter(next(iter(tests.values())).cases.values()))[0]
    reader_writer = determine_reader_writer_from_dataset_json(reference_json, example_file, verbose=False)()
    _, _, allowed = label_setup(reference_json)
    for test in tests.values():
        check_test_labels(test, allowed, reader_writer, label_map)
    torch_device = pick_device(settings.device)
    # Everything above only reads: a bad input leaves no output folder behind.
    output = Path(output_dir)
    check_writable(output, "-o ")
    output.mkdir(parents=True, exist_ok=True)
    if label_map:
        tests = {t: map_labels(test, label_map, output / "labels" / t, reader_writer) for t, test in tests.items()}
    record = run_record(command, torch_device)
    with open(output / LOG_NAME, "a") as log:
        print(f"=== {record['date']}: {record['command']}", file=log, flush=True)
        predictors = {m: ModelPredictor(m, specs[m], folders[m], settings, torch_device, log) for m in specs}
        _predict_all(predictors, tests, output, progress)
    results, per_case_rows, values = _score(list(specs), tests, output, reference_json,
                                            folders[baseline] / "dataset.json", num_processes, progress)
    _write_csv(output / "per_case.csv", per_case_rows)
    label_names = {key: label_name(reference_json, key) for key in values[next(iter(tests))][baseline]}

    comparisons = compare_with_baseline(values, baseline, label_names, n_resamples, confidence, seed, alpha)
    _write_csv(output / "comparisons.csv", comparisons)
    images = report.write_plots(values, baseline, label_names, tests, output, reader_writer, n_examples,
                                comparisons)

    summary = {
        "baseline": baseline,
        "models": {m: dict(s.identity(), description=s.describe(), folder=str(folders[m])) for m, s in specs.items()},
        "test_sets": {t: {"images": str(x.images), "labels": str(x.labels), "n_cases": len(x.cases),
                          "source": str(test_sets[t])} for t, x in tests.items()},
        "label_map": {str(k): v for k, v in sorted(label_map.items())},
        "label_names": {str(key): name for key, name in label_names.items()},
        "run": record, "device": str(torch_device), "use_mirroring": settings.use_mirroring,
        "checkpoint": settings.checkpoint, "tile_step_size": settings.tile_step_size, "log": str(output / LOG_NAME),
        "n_resamples": n_resamples, "confidence": confidence, "seed": seed, "alpha": alpha,
        "results": results, "comparisons": comparisons,
    }
    recursive_fix_for_json_export(summary)
    write_json_atomic(output / "summary.json", summary)
    report.write_report_md(output / "report.md", summary, comparisons, images)
    return summary
