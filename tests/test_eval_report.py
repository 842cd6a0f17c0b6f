"""Report pieces: example selection, slice choice, and plots that are real images."""
import numpy as np
from PIL import Image

from nnunet_synth.evaluation.report import (ExamplePanel, boxplot_by_model, example_grid, paired_lines, pick_slice,
                                            select_examples, write_report_md)


def test_select_examples_takes_largest_gains_then_losses():
    base = {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5, "e": float("nan")}
    other = {"a": 0.9, "b": 0.6, "c": 0.1, "d": 0.5, "e": 0.7}
    assert select_examples(base, other, 1) == ["a", "c"]
    assert select_examples(base, other, 5) == ["a", "b", "c"]  # no change (d) and NaN (e) are never examples


def test_pick_slice_prefers_reference_foreground():
    ref = np.zeros((5, 4, 4), bool)
    pred = np.zeros_like(ref)
    ref[3, :2, :2] = True
    pred[1] = True
    assert pick_slice(ref, pred) == 3
    assert pick_slice(np.zeros_like(ref), pred) == 1
    assert pick_slice(np.zeros_like(ref)) == 2


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def test_plots_are_nonempty_images(tmp_path):
    rng = np.random.default_rng(0)
    values = {m: {f"c{i}": {"Dice": rng.uniform(), "HD95": rng.uniform(0, 9)} for i in range(6)} for m in ("base", "aug")}
    values["aug"]["c0"]["Dice"] = float("nan")
    paths = [boxplot_by_model(values, "T", tmp_path / "box.png"),
             paired_lines({c: v["Dice"] for c, v in values["base"].items()},
                          {c: v["Dice"] for c, v in values["aug"].items()}, "base", "aug", "T", tmp_path / "pair.png")]
    mask = np.zeros((32, 32), bool)
    mask[8:20, 10:22] = True
    panel = ExamplePanel("c1", rng.normal(size=(32, 32)), mask, np.roll(mask, 2, 0), mask, 0.8, 1.0)
    paths.append(example_grid([panel, panel], "base", "aug", "T", tmp_path / "grid.png"))
    for path in paths:
        pixels = _pixels(path)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and np.ptp(pixels) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box.png", "grid.png", "pair.png"]  # no temp files left


def test_report_md_lists_means_comparisons_and_plots(tmp_path):
    nan = float("nan")
    result = {"mean": {"1": {"Dice": 0.8, "HD95": 3.0, "ASSD": 1.0}},
              "n_valid": {"1": {"Dice": 4, "HD95": 3, "ASSD": 3}},
              "empty_counts": {"1": {"empty_pred": 1, "empty_ref": 0, "both_empty": 0}}}
    summary = {"models": {"base": {"description": "d1"}, "aug": {"description": "d2"}}, "baseline": "base",
               "test_sets": {"T": {"n_cases": 4, "images": "i", "labels": "l"}}, "label_map": {"255": 1},
               "label_names": {"1": "lesion"}, "results": {"T": {"base": result, "aug": result}},
               "n_resamples": 100, "confidence": 0.95, "seed": 0}
    row = {"test_set": "T", "label": "lesion", "metric": "Dice", "model": "aug", "n": 4, "mean_diff": 0.05,
           "mean_diff_ci_low": 0.01, "mean_diff_ci_high": 0.09, "median_diff": 0.04, "median_diff_ci_low": nan,
           "median_diff_ci_high": nan, "wilcoxon_p": 0.0004, "wilcoxon_p_holm": 0.0008, "ttest_p": nan,
           "ttest_p_holm": nan, "note": ""}
    (tmp_path / "plots").mkdir()
    plot = tmp_path / "plots" / "box.png"
    plot.write_bytes(b"png")
    text = write_report_md(tmp_path / "report.md", summary, [row], [("Box", plot)]).read_text()
    assert "| T | lesion | base | 0.800 (4) | 3.00 (3) | 1.00 (3) | 1 | 0 |" in text
    assert "0.050 [0.010, 0.090]" in text and "4.00e-04 (8.00e-04)" in text and "n/a (n/a)" in text
    assert "255 -> 1" in text and "![Box](plots/box.png)" in text


def test_report_md_shows_sd_iqr_and_flags_small_n(tmp_path):
    result = {"mean": {"1": {"Dice": 0.8, "HD95": 3.0, "ASSD": 1.0}},
              "spread": {"1": {"Dice": {"sd": 0.05, "median": 0.81, "q1": 0.77, "q3": 0.84},
                               "HD95": {"sd": 1.5, "median": 2.5, "q1": 2.0, "q3": 4.0},
                               "ASSD": {"sd": 0.2, "median": 1.0, "q1": 0.9, "q3": 1.1}}},
              "n_valid": {"1": {"Dice": 4, "HD95": 4, "ASSD": 4}},
              "empty_counts": {"1": {"empty_pred": 0, "empty_ref": 0, "both_empty": 0}}}
    summary = {"models": {"base": {"description": "d1"}, "aug": {"description": "d2"}}, "baseline": "base",
               "test_sets": {"T": {"n_cases": 4, "images": "i", "labels": "l"}}, "label_names": {"1": "lesion"},
               "results": {"T": {"base": result, "aug": result}}, "n_resamples": 100, "confidence": 0.95, "seed": 0,
               "alpha": 0.05}
    row = {"test_set": "T", "label": "lesion", "metric": "Dice", "model": "aug", "n": 4, "mean_diff": 0.05,
           "mean_diff_ci_low": 0.01, "mean_diff_ci_high": 0.09, "median_diff": 0.04, "median_diff_ci_low": 0.0,
           "median_diff_ci_high": 0.1, "diff_sd": 0.02, "diff_q1": 0.03, "diff_q3": 0.06, "wilcoxon_p": 0.125,
           "wilcoxon_p_holm": 0.125, "wilcoxon_min_p": 0.125, "ttest_p": 0.01, "ttest_p_holm": 0.01,
           "note": "n too small: with 4 pairs Wilcoxon cannot reach p < 0.05 (smallest possible p 0.125)"}
    text = write_report_md(tmp_path / "report.md", summary, [row, dict(row, n=8, wilcoxon_min_p=0.0078, note="")],
                           []).read_text()
    assert "| 0.800 ± 0.050; 0.810 [0.770, 0.840] (4) | 3.00 ± 1.50; 2.50 [2.00, 4.00] (4) |" in text
    assert "| 4 **n too small** | 0.050 [0.010, 0.090] ± 0.020 | 0.040 [0.000, 0.100] | [0.030, 0.060] |" in text
    assert "| 8 | 0.050" in text and "BCa" in text
