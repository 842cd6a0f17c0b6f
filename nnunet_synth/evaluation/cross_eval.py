"""Predict test sets with several trained models and compare them case by case.

For every model and test set, nnU-Net's predictor writes the predictions
(predictions that already exist are reused), every prediction is scored with
the metrics of ``nnunet-synth evaluate``, and the models are compared with the
baseline on the same cases (Wilcoxon signed-rank, paired t-test, bootstrap
intervals, Holm correction across test sets and labels).

Models: --model NAME=DATASET:TRAINER:PLANS:CONFIGURATION:FOLDS, where FOLDS is
"0", "0,1,2,3,4" or "all" (several folds are ensembled, as nnUNetv2_predict
does). The model folder is $nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION.

Test sets: --test NAME=DATASET_OR_FOLDER. A raw dataset (an id, a name in
$nnUNet_raw, or a folder with dataset.json) is read from imagesTs/labelsTs when
both exist, else from imagesTr/labelsTr. A plain folder holds images/ (nnU-Net
channel naming, CASE_0000.ext) and labels/ (CASE.ext). Test images must use the
models' file ending.

--label-map 255:1 (repeatable, or "255:1,128:2") maps label values of the test
sets before evaluation; the mapped labels are written under OUTPUT/labels and
the mapping is recorded in summary.json and report.md.

Example (the thyroid study: trained on one dataset, tested on two others):

    nnunet-synth cross-eval \\
        --model baseline=951:nnUNetTrainer:nnUNetPlans:2d:0,1,2,3,4 \\
        --model diffboost=951:nnUNetTrainerDiffBoost:nnUNetPlans:2d:0,1,2,3,4 \\
        --test TDID=952 --test TUCC=/data/tucc --label-map 255:1 \\
        --baseline baseline -o cross_eval_out

Writes to OUTPUT: per_case.csv, summary.json, comparisons.csv, report.md,
plots/*.png, predictions/MODEL/TEST/ (with each pair's summary.json).
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_synth.errors import SynthError

COMPARED_METRICS = ("Dice", "HD95", "ASSD")
CSV_METRICS = ("Dice", "IoU", "Precision", "Recall", "HD95", "HD95_pooled", "ASSD", "TP", "FP", "FN", "TN",
               "n_pred", "n_ref", "empty_pred", "empty_ref")


@dataclass
class ModelSpec:
    dataset: str
    trainer: str
    plans: str
    configuration: str
    folds: tuple

    @classmethod
    def parse(cls, text: str, name: str = "") -> "ModelSpec":
        parts = text.split(":")
        if len(parts) != 5 or not all(parts):
            raise SynthError(f"--model {name}={text}: expected DATASET:TRAINER:PLANS:CONFIGURATION:FOLDS, "
                             "e.g. 951:nnUNetTrainer:nnUNetPlans:2d:0")
        folds = tuple("all" if f == "all" else f for f in parts[4].split(","))
        for f in folds:
            if f != "all" and not f.isdigit():
                raise SynthError(f"--model {name}={text}: fold '{f}' is neither a number nor 'all'")
        return cls(parts[0], parts[1], parts[2], parts[3], tuple(f if f == "all" else int(f) for f in folds))

    def folder(self) -> Path:
        from nnunetv2.utilities.file_path_utilities import get_output_folder

        try:
            return Path(get_output_folder(self.dataset, self.trainer, self.plans, self.configuration))
        except RuntimeError as e:  # nnU-Net's own "could not find a dataset with the ID" message
            raise SynthError(f"model dataset {self.dataset}: {e}") from None

    def describe(self) -> str:
        return (f"dataset {self.dataset}, trainer {self.trainer}, plans {self.plans}, "
                f"configuration {self.configuration}, folds {','.join(map(str, self.folds))}")

    def identity(self) -> dict:
        return {"dataset": str(self.dataset), "trainer": self.trainer, "plans": self.plans,
                "configuration": self.configuration, "folds": [str(f) for f in self.folds]}


@dataclass
class TestSet:
    name: str
    images: Path
    labels: Path
    file_ending: str
    cases: dict[str, list[str]] = field(default_factory=dict)  # case -> image files (channel order)

    def label_file(self, case: str) -> Path:
        return self.labels / f"{case}{self.file_ending}"


def parse_label_map(items: list[str] | None) -> dict[int, int]:
    mapping: dict[int, int] = {}
    for item in items or []:
        for pair in item.split(","):
            src, sep, dst = pair.partition(":")
            if not sep or not src.strip().lstrip("-").isdigit() or not dst.strip().lstrip("-").isdigit():
                raise SynthError(f"--label-map {item}: expected FROM:TO pairs of integers, e.g. 255:1")
            if int(src) in mapping and mapping[int(src)] != int(dst):
                raise SynthError(f"--label-map: value {src} is mapped twice ({mapping[int(src)]} and {dst})")
            mapping[int(src)] = int(dst)
    return mapping


def _named(items: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SynthError(f"{option} {item}: expected NAME=VALUE")
        if name in out:
            raise SynthError(f"{option}: the name '{name}' is used twice")
        out[name] = value
    return out


def check_model(name: str, spec: ModelSpec) -> Path:
    folder = spec.folder()
    for fname in ("dataset.json", "plans.json"):
        if not (folder / fname).is_file():
            raise SynthError(f"model '{name}': {folder / fname} is missing; train it with nnUNetv2_train "
                             f"{spec.dataset} {spec.configuration} FOLD -tr {spec.trainer} -p {spec.plans}")
    for fold in spec.folds:
        checkpoint = folder / f"fold_{fold}" / "checkpoint_final.pth"
        if not checkpoint.is_file():
            raise SynthError(f"model '{name}': {checkpoint} is missing; finish training fold {fold} first")
    return folder


def open_test_set(name: str, where: str, file_ending: str) -> TestSet:
    """Find a test set's images and labels and list its cases (see the module docstring for the layouts)."""
    from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder

    folder = Path(where)
    if (folder / "images").is_dir() and not (folder / "dataset.json").is_file():
        images, labels = folder / "images", folder / "labels"
    else:
        from nnunet_synth.raw_dataset import find_raw_dataset, load_dataset_json

        folder = find_raw_dataset(where)
        dj = load_dataset_json(folder)
        if dj.get("file_ending") != file_ending:
            raise SynthError(f"test set '{name}': {folder / 'dataset.json'} has file ending {dj.get('file_ending')}, "
                             f"the models use {file_ending}; convert the test set first")
        use_ts = (folder / "imagesTs").is_dir() and (folder / "labelsTs").is_dir()
        images, labels = (folder / "imagesTs", folder / "labelsTs") if use_ts else (folder / "imagesTr", folder / "labelsTr")
    for sub in (images, labels):
        if not sub.is_dir():
            raise SynthError(f"test set '{name}': {sub} is missing")
    test = TestSet(name, images, labels, file_ending)
    for case in sorted(get_identifiers_from_splitted_dataset_folder(str(images), file_ending)):
        test.cases[case] = sorted(str(p) for p in images.glob(f"{case}_[0-9][0-9][0-9][0-9]{file_ending}"))
        if not test.label_file(case).is_file():
            raise SynthError(f"test set '{name}': case '{case}' has no label file {test.label_file(case)}")
    if not test.cases:
        raise SynthError(f"test set '{name}': no images ending in {file_ending} in {images}")
    return test


def map_labels(test: TestSet, mapping: dict[int, int], out_folder: Path, reader_writer) -> TestSet:
    """Write the test set's labels with ``mapping`` applied (complete files are kept on a rerun)."""
    import numpy as np

    from nnunet_synth.atomic import atomic_path, write_json_atomic

    out_folder.mkdir(parents=True, exist_ok=True)
    record = out_folder / "label_map.json"
    wanted = {"source": str(test.labels), "mapping": {str(k): v for k, v in sorted(mapping.items())}}
    if record.is_file() and json.loads(record.read_text()) != wanted:
        raise SynthError(f"{out_folder}: holds labels mapped differently ({record}); delete it or choose another -o")
    # The record goes first, so files of an interrupted run are never taken for another mapping's.
    write_json_atomic(record, wanted)
    for case in test.cases:
        target = out_folder / f"{case}{test.file_ending}"
        if target.is_file():
            continue
        seg, props = reader_writer.read_seg(str(test.label_file(case)))
        mapped = seg.copy()
        for src, dst in mapping.items():
            mapped[seg == src] = dst  # from the original values, so 1:2 and 2:1 swap rather than chain
        with atomic_path(target) as tmp:
            reader_writer.write_seg(mapped.astype(np.int16)[0], str(tmp), props)
    return TestSet(test.name, test.images, out_folder, test.file_ending, dict(test.cases))


def check_test_labels(test: TestSet, allowed: set[int], reader_writer) -> None:
    """Refuse label values the models do not know before any prediction is made, with the fix in the message."""
    import numpy as np

    for case in test.cases:
        values = set(np.unique(reader_writer.read_seg(str(test.label_file(case)))[0]).tolist())
        unknown = sorted(int(v) for v in values - allowed)
        if unknown:
            raise SynthError(f"test set '{test.name}': case '{case}' ({test.label_file(case)}) holds label value(s) "
                             f"{unknown} that the models do not predict (labels: {sorted(allowed)}); "
                             f"map them with --label-map, e.g. --label-map {unknown[0]}:1")


def pick_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SynthError("--device cuda: no CUDA device is available; use --device cpu")
    return torch.device(device)


def predict_missing(name: str, spec: ModelSpec, model_folder: Path, test: TestSet, out_folder: Path,
                    device, use_mirroring: bool) -> int:
    """Predict the cases of ``test`` that have no prediction in ``out_folder`` yet; returns how many."""
    import shutil

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    out_folder.mkdir(parents=True, exist_ok=True)
    record = out_folder / "model.json"
    identity = dict(spec.identity(), model_folder=str(model_folder), use_mirroring=use_mirroring)
    if record.is_file() and json.loads(record.read_text()) != identity:
        raise SynthError(f"{out_folder}: holds predictions of another model or setting ({record}); "
                         "delete the folder or choose another -o")
    todo = [c for c in test.cases if not (out_folder / f"{c}{test.file_ending}").is_file()]
    if not todo:
        return 0
    from nnunet_synth.atomic import write_json_atomic

    write_json_atomic(record, identity)
    # nnU-Net writes straight to the final name; predicting into a staging folder and renaming
    # afterwards means a killed run never leaves a half-written prediction that would be reused.
    staging = out_folder.parent / f".tmp-{out_folder.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=device.type == "cuda", device=device,
                                verbose=False, allow_tqdm=True)
    predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=spec.folds)
    predictor.predict_from_files_sequential([test.cases[c] for c in todo], [str(staging / c) for c in todo],
                                            save_probabilities=False, overwrite=True)
    for c in todo:
        produced = staging / f"{c}{test.file_ending}"
        if not produced.is_file():
            raise SynthError(f"model '{name}', test set '{test.name}': nnU-Net wrote no prediction for case '{c}'")
        os.replace(produced, out_folder / produced.name)
    for extra in ("dataset.json", "plans.json"):
        if (staging / extra).is_file():
            os.replace(staging / extra, out_folder / extra)
    shutil.rmtree(staging, ignore_errors=True)
    return len(todo)


def _label_name(dataset_json: dict, key) -> str:
    for name, value in dataset_json["labels"].items():
        if value == key or (isinstance(value, list) and tuple(value) == tuple(key if isinstance(key, tuple) else (key,))):
            return name
    return str(key)


def _write_csv(path: Path, rows: list[dict]) -> None:
    from nnunet_synth.atomic import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
            writer.writeheader()
            writer.writerows(rows)


def _load_panel(test: TestSet, case: str, pred_base: Path, pred_other: Path, reader_writer, label_key,
                base_dice: float, other_dice: float):
    import numpy as np

    from nnunet_synth.evaluation.report import ExamplePanel, pick_slice

    image, props = reader_writer.read_images(test.cases[case][:1])
    ref = reader_writer.read_seg(str(test.label_file(case)))[0][0]
    base = reader_writer.read_seg(str(pred_base / f"{case}{test.file_ending}"))[0][0]
    other = reader_writer.read_seg(str(pred_other / f"{case}{test.file_ending}"))[0][0]
    keys = label_key if isinstance(label_key, tuple) else (label_key,)
    arrays = [image[0]] + [np.isin(a, keys) for a in (ref, base, other)]
    if arrays[0].ndim == 3 and arrays[0].shape[0] == 1:  # 2D case with nnU-Net's dummy axis
        arrays = [a[0] for a in arrays]
    elif arrays[0].ndim == 3:
        z = pick_slice(arrays[1], arrays[2], arrays[3])
        arrays = [a[z] for a in arrays]
    return ExamplePanel(case, *arrays, baseline_dice=base_dice, other_dice=other_dice)


def compare_with_baseline(values: dict, baseline: str, label_names: dict, n_resamples: int, confidence: float,
                          seed: int) -> list[dict]:
    """Paired comparisons of every model with the baseline; one Holm family per (model, metric).

    ``values[test][model][label][case]`` holds a case's metric dict.
    """
    from nnunet_synth.evaluation.stats import add_holm, paired_compare

    models = list(next(iter(values.values())))
    rows = []
    for other in (m for m in models if m != baseline):
        for metric in COMPARED_METRICS:
            family = []
            for t, per_model in values.items():
                for key, base_cases in per_model[baseline].items():
                    label = label_names[key]
                    result = paired_compare({c: v[metric] for c, v in base_cases.items()},
                                            {c: v[metric] for c, v in per_model[other][key].items()},
                                            n_resamples=n_resamples, confidence=confidence, seed=seed,
                                            what=f"{t}/{label}/{metric}/{baseline} vs {other}")
                    result.context = {"test_set": t, "label": label, "metric": metric, "baseline": baseline,
                                      "model": other}
                    family.append(result)
            add_holm(family)
            rows.extend(r.as_row() for r in family)
    return rows


def _write_plots(values: dict, baseline: str, label_names: dict, tests: dict, output: Path, reader_writer,
                 n_examples: int) -> list[tuple[str, Path]]:
    from nnunet_synth.evaluation import report

    images = []
    plots = output / "plots"
    for t, test in tests.items():
        models = list(values[t])
        for key in values[t][baseline]:
            label = label_names[key]
            per_model = {m: values[t][m][key] for m in models}
            images.append((f"{t} / {label}: Dice and HD95 by model",
                           report.boxplot_by_model(per_model, f"{t} / {label}",
                                                   plots / f"box_{report.safe_name(t)}_{report.safe_name(label)}.png")))
            base_dice = {c: v["Dice"] for c, v in per_model[baseline].items()}
            for other in (m for m in models if m != baseline):
                other_dice = {c: v["Dice"] for c, v in per_model[other].items()}
                stem = f"{report.safe_name(t)}_{report.safe_name(label)}_{other}"
                images.append((f"{t} / {label}: per-case Dice, {baseline} vs {other}",
                               report.paired_lines(base_dice, other_dice, baseline, other,
                                                   f"{t} / {label}", plots / f"paired_{stem}.png")))
                chosen = report.select_examples(base_dice, other_dice, n_examples)
                if chosen:
                    panels = [_load_panel(test, c, output / "predictions" / baseline / t,
                                          output / "predictions" / other / t, reader_writer, key,
                                          base_dice[c], other_dice[c]) for c in chosen]
                    images.append((f"{t} / {label}: largest gains and losses of {other}",
                                   report.example_grid(panels, baseline, other, f"{t} / {label}",
                                                       plots / f"examples_{stem}.png")))
    return images


def run_cross_eval(models: dict, test_sets: dict, output_dir: str | os.PathLike, baseline: str,
                   label_map: dict[int, int] | None = None, device: str = "auto", use_mirroring: bool = True,
                   num_processes: int = 1, n_resamples: int = 10000, confidence: float = 0.95, seed: int = 0,
                   n_examples: int = 3, progress: bool = True) -> dict:
    """Predict, evaluate, compare and report; returns the summary written to OUTPUT/summary.json.

    ``models``: name -> ``ModelSpec`` or "DATASET:TRAINER:PLANS:CONFIGURATION:FOLDS".
    ``test_sets``: name -> dataset id, name or folder (see the module docstring).
    ``baseline``: the model name every other model is compared with.
    """
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    from nnunet_synth.atomic import write_json_atomic
    from nnunet_synth.evaluation import report
    from nnunet_synth.evaluation.evaluate import evaluate_folders, label_setup, summary_to_json

    if len(models) < 2:
        raise SynthError("cross-eval needs at least two models (a baseline and one to compare)")
    if baseline not in models:
        raise SynthError(f"--baseline {baseline}: no model of that name (models: {', '.join(models)})")
    if not test_sets:
        raise SynthError("cross-eval needs at least one test set (--test NAME=DATASET_OR_FOLDER)")
    for what, names in (("model", models), ("test set", test_sets)):
        for n in names:
            if report.safe_name(n) != n:
                raise SynthError(f"{what} name '{n}': use letters, digits, '-', '_' and '.' only")
    specs = {n: s if isinstance(s, ModelSpec) else ModelSpec.parse(s, n) for n, s in models.items()}
    folders = {n: check_model(n, s) for n, s in specs.items()}
    dataset_jsons = {n: json.loads((folders[n] / "dataset.json").read_text()) for n in specs}
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
    n_channels = len(reference_json["channel_names"])
    for test in tests.values():
        for case, files in test.cases.items():
            if len(files) != n_channels:
                raise SynthError(f"test set '{test.name}': case '{case}' has {len(files)} image file(s) in "
                                 f"{test.images}, the models expect {n_channels} channel(s)")
    example_file = next(iter(next(iter(tests.values())).cases.values()))[0]
    reader_writer = determine_reader_writer_from_dataset_json(reference_json, example_file, verbose=False)()
    if label_map:
        tests = {t: map_labels(test, label_map, output / "labels" / t, reader_writer) for t, test in tests.items()}
    _, _, allowed = label_setup(reference_json)
    for test in tests.values():
        check_test_labels(test, allowed, reader_writer)
    torch_device = pick_device(device)
    dj_path = folders[baseline] / "dataset.json"

    results, per_case_rows, values = {}, [], {}
    for t, test in tests.items():
        results[t], values[t] = {}, {}
        for m, spec in specs.items():
            pred_folder = output / "predictions" / m / t
            predict_missing(m, spec, folders[m], test, pred_folder, torch_device, use_mirroring)
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
                                          "label": _label_name(reference_json, key),
                                          **{k: metrics[k] for k in CSV_METRICS}})
    _write_csv(output / "per_case.csv", per_case_rows)
    label_names = {key: _label_name(reference_json, key) for key in values[next(iter(tests))][baseline]}

    comparisons = compare_with_baseline(values, baseline, label_names, n_resamples, confidence, seed)
    _write_csv(output / "comparisons.csv", comparisons)
    images = _write_plots(values, baseline, label_names, tests, output, reader_writer, n_examples)

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
    from nnunetv2.utilities.json_export import recursive_fix_for_json_export

    recursive_fix_for_json_export(summary)
    write_json_atomic(output / "summary.json", summary)
    report.write_report_md(output / "report.md", summary, comparisons, images)
    return summary
