"""cross-eval end to end: the demo's two trained models, two test sets (a raw dataset and a plain folder)."""
import csv
import json
import math
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_synth.testing import make_raw_dataset_2d

SPACING = (0.5, 0.4)  # (y, x) in mm


def png_to_nifti_2d(png_dataset, target_images, target_labels, label_value=1):
    """Re-write a PNG dataset's cases as 2D NIfTI with real pixel spacing (the phantom test-set layout)."""
    from skimage import io

    target_images.mkdir(parents=True, exist_ok=True)
    target_labels.mkdir(parents=True, exist_ok=True)
    cases = sorted(p.name[:-4] for p in (png_dataset / "labelsTr").glob("*.png"))
    for case in cases:
        for array, path in ((io.imread(png_dataset / "imagesTr" / f"{case}_0000.png").astype(np.float32),
                             target_images / f"{case}_0000.nii.gz"),
                            (io.imread(png_dataset / "labelsTr" / f"{case}.png").astype(np.uint8) * label_value,
                             target_labels / f"{case}.nii.gz")):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(SPACING[::-1])
            sitk.WriteImage(image, str(path))
    return cases


def nifti_dataset(raw, scratch, dataset_id, name, n_cases, seed):
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    png = make_raw_dataset_2d(scratch, dataset_id, name, n_cases=n_cases, shape=(48, 48), seed=seed)
    folder = raw / png.name
    cases = png_to_nifti_2d(png, folder / "imagesTr", folder / "labelsTr")
    generate_dataset_json(str(folder), {0: "US"}, {"background": 0, "lesion": 1}, len(cases), ".nii.gz",
                          dataset_name=folder.name)
    return folder


def as_float(text):
    return float(text) if text not in ("True", "False") else float(text == "True")


def same(a, b, rel=1e-6):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=rel)


def expect_row_metrics(row, reference, prediction):
    """A per_case.csv row against nnU-Net's compute_metrics (overlap) and MONAI (surface distances in mm)."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    nnunet = compute_metrics(str(reference), str(prediction), SimpleITKIO(), [1])["metrics"][1]
    for key in ("Dice", "IoU", "TP", "FP", "FN", "TN", "n_pred", "n_ref"):
        assert same(as_float(row[key]), nnunet[key]), (row["case"], key, row[key], nnunet[key])
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(reference))) == 1
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction))) == 1
    if not ref.any() and not pred.any():
        expected = {"HD95": math.nan, "ASSD": math.nan}
    elif not ref.any() or not pred.any():  # the documented stand-in: the image diagonal in mm
        diagonal = math.hypot(ref.shape[0] * SPACING[0], ref.shape[1] * SPACING[1])
        expected = {"HD95": diagonal, "ASSD": diagonal}
    else:
        p, r = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(ref)[None, None].float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = {"HD95": compute_hausdorff_distance(p, r, include_background=True, percentile=95,
                                                           spacing=SPACING).item(),
                        "ASSD": compute_average_surface_distance(p, r, include_background=True, symmetric=True,
                                                                 spacing=SPACING).item()}
    for key, value in expected.items():
        assert same(as_float(row[key]), value), (row["case"], key, row[key], value)
    assert as_float(row["empty_pred"]) == (not pred.any()) and as_float(row["empty_ref"]) == (not ref.any())


def expect_wilcoxon_and_holm(rows, comparisons):
    """Each comparison's p-value is scipy's Wilcoxon on the per_case.csv pairs; Holm over the test sets by hand."""
    from scipy import stats

    def per_case(test_set, model, metric):
        return {r["case"]: as_float(r[metric]) for r in rows if r["test_set"] == test_set and r["model"] == model}

    for c in comparisons:
        base, other = per_case(c["test_set"], "baseline", c["metric"]), per_case(c["test_set"], "augmented", c["metric"])
        pairs = [(base[k], other[k]) for k in sorted(base) if math.isfinite(base[k]) and math.isfinite(other[k])]
        assert c["n"] == len(pairs) and c["n_dropped"] == len(base) - len(pairs)
        diff = [o - b for b, o in pairs]
        if len(pairs) < 2 or not any(diff):
            assert math.isnan(c["wilcoxon_p"]) and c["note"], c
        else:
            expected = stats.wilcoxon([o for _, o in pairs], [b for b, _ in pairs]).pvalue
            assert c["wilcoxon_p"] == pytest.approx(expected, rel=1e-9), c
        assert c["mean_diff"] == pytest.approx(np.mean(diff) if diff else math.nan, nan_ok=True)
    for metric in {c["metric"] for c in comparisons}:
        family = sorted((c for c in comparisons if c["metric"] == metric and math.isfinite(c["wilcoxon_p"])),
                        key=lambda c: c["wilcoxon_p"])
        running = 0.0
        for rank, c in enumerate(family):
            running = max(running, min(1.0, (len(family) - rank) * c["wilcoxon_p"]))
            assert c["wilcoxon_p_holm"] == pytest.approx(running), c


@pytest.mark.e2e
def test_cross_eval_end_to_end(demo_run, nnunet_folders, tmp_path, monkeypatch, capfd):
    from PIL import Image

    from nnunet_synth.errors import SynthError
    from nnunet_synth.evaluation import prediction
    from nnunet_synth.evaluation.cross_eval import run_cross_eval
    from nnunet_synth.evaluation.prediction import PredictionSettings

    in_domain = nifti_dataset(nnunet_folders.raw, tmp_path / "png", 952, "CrossTestA", 4, seed=1)
    plain = tmp_path / "plain_test"
    png_b = make_raw_dataset_2d(tmp_path / "png", 953, "CrossTestB", n_cases=3, shape=(48, 48), seed=2)
    plain_cases = png_to_nifti_2d(png_b, plain / "images", plain / "labels", label_value=255)
    # The demo's two models of Dataset700 (2D NIfTI) are read from its results; nothing is written there.
    demo = demo_run.folders()
    monkeypatch.setenv("nnUNet_results", str(demo.results))
    monkeypatch.setenv("nnUNet_preprocessed", str(demo.preprocessed))

    out = tmp_path / "cross"
    models = {"baseline": "700:nnUNetTrainerShort:nnUNetPlans:2d:0",
              "augmented": "700:nnUNetTrainerDiffBoostInputMixShort:nnUNetPlans:2d:0"}
    tests = {"A": "952", "B": str(plain)}
    cpu = PredictionSettings(device="cpu", use_mirroring=False)
    builds = []
    real_predictor = prediction.ModelPredictor.predictor

    def counted(self):
        if self._predictor is None:
            builds.append(self.name)
        return real_predictor(self)

    monkeypatch.setattr(prediction.ModelPredictor, "predictor", counted)
    summary = run_cross_eval(models, tests, out, "baseline", label_map={255: 1}, prediction=cpu,
                             n_resamples=200, n_examples=2, progress=False, command="nnunet-synth cross-eval (test)")
    # One predictor per model for both test sets; nnU-Net's chatter is in the log, not on the terminal.
    assert builds == ["baseline", "augmented"]
    terminal = capfd.readouterr()
    assert "There are" not in terminal.out + terminal.err and "I am process" not in terminal.out + terminal.err
    log = (out / "predict.log").read_text()
    assert "--- model augmented on test set B: 3 case(s) to predict" in log
    assert log.count("There are 1 cases that I would like to predict") == 2 * (4 + 3)  # nnU-Net, case by case

    rows = list(csv.DictReader(open(out / "per_case.csv")))
    assert len(rows) == (4 + 3) * 2
    assert {r["case"] for r in rows if r["test_set"] == "B"} == set(plain_cases)
    assert all(r["label"] == "lesion" for r in rows)
    written = json.loads((out / "summary.json").read_text())
    assert written["label_map"] == {"255": 1}
    assert written["test_sets"]["A"]["images"].endswith("imagesTr")
    assert set(written["results"]) == {"A", "B"} and written["results"]["B"]["augmented"]["n_cases"] == 3
    comparisons = written["comparisons"]
    assert len(comparisons) == 2 * 3  # test sets x compared metrics, one label, one compared model
    assert all("wilcoxon_p_holm" in c for c in comparisons)
    # Mapped labels hold the model's values; predictions and labels share the test set's geometry.
    for case in plain_cases:
        mapped = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labels" / "B" / f"{case}.nii.gz")))
        original = sitk.GetArrayFromImage(sitk.ReadImage(str(plain / "labels" / f"{case}.nii.gz")))
        assert np.array_equal(mapped, (original == 255).astype(mapped.dtype)) and mapped.any()
    references = {"A": in_domain / "labelsTr", "B": out / "labels" / "B"}
    for row in rows:
        expect_row_metrics(row, references[row["test_set"]] / f"{row['case']}.nii.gz",
                           out / "predictions" / row["model"] / row["test_set"] / f"{row['case']}.nii.gz")
    expect_wilcoxon_and_holm(rows, comparisons)
    prediction = sitk.ReadImage(str(out / "predictions" / "augmented" / "A" / "case_000.nii.gz"))
    assert prediction.GetSpacing() == pytest.approx(SPACING[::-1])

    report = (out / "report.md").read_text()
    pngs = sorted((out / "plots").glob("*.png"))
    assert {p.name.split("_")[0] for p in pngs} >= {"box", "paired"}
    for png in pngs:
        assert png.name in report
        with Image.open(png) as im:
            pixels = np.asarray(im.convert("L"))
        assert pixels.shape[0] > 50 and pixels.shape[1] > 50 and np.ptp(pixels) > 0
    assert "Wilcoxon" in report and "baseline" in report
    # 4 and 3 cases: the Wilcoxon test can never reach p < 0.05 (min p 2/2^n), and the report says so
    for c in comparisons:
        if math.isfinite(c["wilcoxon_p"]):
            assert c["wilcoxon_min_p"] >= 2 / 2 ** c["n"] - 1e-12 and "n too small" in c["note"], c
    assert "**n too small**" in report and "BCa" in report and " ± " in report
    assert {p.name for p in pngs} >= {"box_A_lesion.png", "paired_A_lesion_augmented.png",
                                       "paired_B_lesion_augmented.png"}
    run = written["run"]
    assert run["command"] == "nnunet-synth cross-eval (test)" and run["device"] == "cpu"
    assert run["versions"]["nnunetv2"] and run["versions"]["torch"] and run["date"].endswith("+00:00")
    assert "nnunet-synth cross-eval (test)" in report and f"torch {run['versions']['torch']}" in report
    assert written["checkpoint"] == "checkpoint_final.pth" and written["tile_step_size"] == 0.5

    # A rerun reuses every prediction.
    before = {p: p.stat().st_mtime_ns for p in (out / "predictions").rglob("*.nii.gz")}
    builds.clear()
    again = run_cross_eval(models, tests, out, "baseline", label_map={255: 1}, prediction=cpu,
                           n_resamples=200, n_examples=2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (out / "predictions").rglob("*.nii.gz")} == before
    assert json.dumps(again["comparisons"]) == json.dumps(summary["comparisons"])  # NaN-safe comparison
    assert builds == []  # nothing to predict: no predictor is built

    # A test image nnU-Net cannot read: one line naming it, nothing half-written left in staging.
    corrupt = tmp_path / "corrupt_test"
    png_to_nifti_2d(png_b, corrupt / "images", corrupt / "labels")
    bad = corrupt / "images" / f"{plain_cases[1]}_0000.nii.gz"
    bad.write_bytes(bad.read_bytes()[:80])
    with pytest.raises(SynthError, match=rf"test set 'C': case '{plain_cases[1]}'.*{bad.name} cannot be read"):
        run_cross_eval(models, {"C": str(corrupt)}, out, "baseline", prediction=cpu, n_resamples=200,
                       progress=False)
    assert not [p for p in (out / "predictions").rglob("*") if p.name.startswith(".tmp-")]
    assert sorted(p.name for p in (out / "predictions" / "baseline" / "C").glob("*.nii.gz")) == \
        [f"{plain_cases[0]}.nii.gz"]  # the case before the bad one is complete and kept
