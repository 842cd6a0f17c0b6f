"""The demo with a tiny budget (run once per session by conftest's demo_run): every artifact it promises is there and valid."""
import json

import numpy as np
import pytest
from PIL import Image


@pytest.mark.e2e
def test_demo_tiny_budget(demo_run):
    workdir = demo_run.workdir
    out = demo_run.first
    assert "| trainer | scanner | Dice |" in out
    assert str(workdir / "cross_eval" / "report.md") in out

    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    raw = workdir / "nnUNet_raw"
    datasets = sorted(p for p in raw.iterdir() if p.name.startswith("Dataset"))
    assert [p.name[:10] for p in datasets] == ["Dataset700", "Dataset701", "Dataset702", "Dataset703",
                                                 "Dataset704", "Dataset705", "Dataset710"]
    for d in datasets:
        verify_dataset_integrity(str(d), num_processes=1)

    results = workdir / "nnUNet_results"
    for pattern in ("Dataset700_*/nnUNetTrainerShort__nnUNetPlans__2d/fold_0/checkpoint_final.pth",
                    "Dataset700_*/nnUNetTrainerDiffBoostShort__nnUNetPlans__2d/fold_0/checkpoint_final.pth",
                    "Dataset710_*/nnUNetTrainerSynthExpandShort__nnUNetPlans__2d/fold_0/checkpoint_final.pth"):
        assert len(list(results.glob(pattern))) == 1, pattern

    cross = workdir / "cross_eval"
    summary = json.loads((cross / "summary.json").read_text())
    assert set(summary["results"]) == {"A", "B", "C"}
    # the printed table is summary.json's means and Holm-corrected Wilcoxon p-values, row for row
    p_values = {(r["test_set"], r["model"], r["metric"]): r["wilcoxon_p_holm"] for r in summary["comparisons"]}

    def shown_p(model, scanner, metric):
        if model == "baseline":
            return "—"
        value = p_values[(scanner, model, metric)]
        return "n/a" if np.isnan(value) else f"{value:.3g}"

    printed = [line for line in out.splitlines() if line.startswith("| ") and "trainer" not in line]
    expected = []
    for model in ("baseline", "diffboost", "synthexpand"):
        for scanner in "ABC":
            means = summary["results"][scanner][model]["foreground_mean"]
            expected.append(f"| {model} | {scanner} | {means['Dice']:.3f} | {shown_p(model, scanner, 'Dice')} | "
                            f"{means['HD95']:.2f} | {shown_p(model, scanner, 'HD95')} |")
    assert printed == expected
    n_test = json.loads((raw / datasets[1].name / "dataset.json").read_text())["numTraining"]
    for model in ("baseline", "diffboost", "synthexpand"):
        for device in "ABC":
            preds = list((cross / "predictions" / model / device).glob("*.nii.gz"))
            assert len(preds) == n_test
    assert (cross / "per_case.csv").read_text().count("\n") > 3 * 3 * n_test
    assert "| " in (cross / "report.md").read_text()
    pngs = list((cross / "plots").glob("*.png"))
    assert len(pngs) >= 3
    for png in pngs:
        image = np.asarray(Image.open(png).convert("L"))
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 1, png

    # a rerun skips every step and prints the same table
    again = demo_run.again
    assert again.count("done before, skipped") == 11
    assert out.split("| trainer |")[1].split("report:")[0] == again.split("| trainer |")[1].split("report:")[0]
