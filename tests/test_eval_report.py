"""Report pieces: example selection, slice choice, and plots that are real images."""
import numpy as np
import pytest
from PIL import Image

from nnunet_synth.evaluation.report import (ExamplePanel, boxplot_by_model, boxplot_figure, example_figure,
                                            example_grid, nice_length, paired_figure, paired_lines, pick_slice,
                                            select_examples, write_report_md)


@pytest.fixture(autouse=True)
def matplotlib_defaults():
    """The figures are checked at matplotlib's default style.

    nnU-Net's progress plot calls ``seaborn.set(font_scale=2.5)``, which changes
    the style of the whole process: a trainer that ran an epoch in the same
    xdist worker would otherwise make the tick labels here 2.5 times larger.
    """
    import matplotlib

    with matplotlib.rc_context({k: v for k, v in matplotlib.rcParamsDefault.items() if k != "backend"}):
        yield


def test_select_examples_takes_largest_gains_then_losses():
    base = {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5, "e": float("nan")}
    other = {"a": 0.9, "b": 0.6, "c": 0.1, "d": 0.5, "e": 0.7}
    assert select_examples(base, other, 1) == (["a"], ["c"])
    assert select_examples(base, other, 5) == (["a", "b"], ["c"])  # no change (d) and NaN (e) are never examples


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


def _values(n=6):
    rng = np.random.default_rng(0)
    values = {m: {f"c{i}": {"Dice": rng.uniform(), "HD95": rng.uniform(0, 9)} for i in range(n)} for m in ("base", "aug")}
    values["aug"]["c0"]["Dice"] = float("nan")
    return values


def _panel(case="c1", base_dice=0.8, other_dice=1.0, pixel_size=(0.5, 0.4)):
    rng = np.random.default_rng(1)
    mask = np.zeros((32, 40), bool)
    mask[8:20, 10:22] = True
    return ExamplePanel(case, rng.normal(size=(32, 40)), mask, np.roll(mask, 2, 0), mask, base_dice, other_dice,
                        pixel_size)


def test_plots_are_nonempty_images(tmp_path):
    values = _values()
    paths = [boxplot_by_model(values, "T", "lesion", tmp_path / "box.png"),
             paired_lines(values["base"], values["aug"], "base", "aug", "T", "lesion", tmp_path / "pair.png")]
    paths.append(example_grid([_panel()], [_panel("c2", 0.9, 0.5)], "base", "aug", "T", "lesion", tmp_path / "grid.png"))
    for path in paths:
        pixels = _pixels(path)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and np.ptp(pixels) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box.png", "grid.png", "pair.png"]  # no temp files left


def _texts(fig):
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text)]


def _overlaps(labels):
    boxes = [t.get_window_extent() for t in labels if t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_box_plot_shows_points_legend_fixed_dice_axis_and_readable_labels():
    import matplotlib.pyplot as plt

    values = _values(9)
    values["a_model_with_a_long_name"] = values.pop("aug")
    values["third"] = values["base"]
    fig = boxplot_figure(values, "TDID", "lesion")
    fig.canvas.draw()
    dice_ax, hd_ax = fig.axes
    assert dice_ax.get_ylim() == (0.0, 1.0) and hd_ax.get_ylim()[0] == 0
    assert dice_ax.get_title() == "Dice: lesion, test set TDID" and hd_ax.get_title() == "HD95: lesion, test set TDID"
    assert hd_ax.get_ylabel() == "HD95 (mm)"
    # every finite value is a point (the long-named model has one NaN Dice)
    assert sum(len(c.get_offsets()) for c in dice_ax.collections) == 9 + 8 + 9
    assert {"median", "mean", "one case"} <= {t.get_text() for t in fig.legends[0].get_texts()}
    for ax in fig.axes:
        assert not _overlaps(ax.get_xticklabels())
        assert not any(t.get_window_extent().overlaps(ax.xaxis.label.get_window_extent())
                       for t in ax.get_xticklabels() if ax.xaxis.label.get_text())
    assert "a_model_\nwith_a_long_\nname\n(n=8)" in [t.get_text() for t in dice_ax.get_xticklabels()]
    plt.close(fig)


def test_paired_plot_has_dice_and_hd95_colour_legend_n_and_p():
    import matplotlib.pyplot as plt

    values = _values(5)
    rows = {"Dice": {"n": 5, "wilcoxon_p": 0.0625, "wilcoxon_p_holm": 0.125, "wilcoxon_min_p": 0.0625, "alpha": 0.05},
            "HD95": {"n": 6, "wilcoxon_p": 0.03125, "wilcoxon_p_holm": 0.0625, "wilcoxon_min_p": 0.03125,
                     "alpha": 0.05}}
    fig = paired_figure(values["base"], values["aug"], "base", "aug", "T", "lesion", rows)
    dice_ax, hd_ax = fig.axes
    assert dice_ax.get_title().startswith("Dice: lesion, test set T\nn = 5, Wilcoxon p = 0.062 (Holm 0.125)")
    assert "n too small" in dice_ax.get_title() and "n too small" not in hd_ax.get_title()
    assert hd_ax.get_title().startswith("HD95: lesion, test set T\nn = 6, Wilcoxon p = 0.031")
    assert dice_ax.get_ylim() == (0.0, 1.0)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["aug better than baseline", "aug worse than baseline", "equal"]
    # HD95: lower is better, so a case whose HD95 drops is drawn green
    for ax, metric in ((dice_ax, "Dice"), (hd_ax, "HD95")):
        for line in ax.get_lines():
            a, b = line.get_ydata()
            better = b < a if metric == "HD95" else b > a
            assert line.get_color() == ("tab:green" if better else "tab:red" if a != b else "0.55")
    plt.close(fig)


def test_example_grid_titles_legend_blocks_and_scale_bar():
    import matplotlib.pyplot as plt

    fig = example_figure([_panel("g1"), _panel("g2", 0.5, 0.9)], [_panel("l1", 0.9, 0.4)], "base", "aug", "T", "lesion")
    texts = _texts(fig)
    assert "Largest Dice gains: aug better than base" in texts and "Largest Dice losses: aug worse than base" in texts
    assert texts.count("image") == 2 and texts.count("base (baseline)") == 2  # column titles on each block
    assert {"reference (dashed where drawn over a prediction)", "prediction of the column's model"} <= set(texts)
    assert "2 mm" in texts  # 40 px x 0.4 mm = 16 mm wide: a round length of at most a quarter
    assert any(t.startswith("g2\nΔDice +0.400") for t in texts)
    fig.canvas.draw()
    # no wide empty band between the rows of a block
    block = [ax for ax in fig.subfigs[0].axes]
    first, second = block[0].get_window_extent(), block[4].get_window_extent()
    assert first.y0 - second.y1 < 0.1 * first.height
    plt.close(fig)
    px = example_figure([_panel(pixel_size=None)], [], "base", "aug", "T", "lesion")
    assert "10 px" in _texts(px) and not any("losses" in t for t in _texts(px))
    plt.close(px)


def test_wrapped_model_names():
    from nnunet_synth.evaluation.report import wrap_name

    assert wrap_name("baseline") == "baseline"
    assert wrap_name("a_model_with_a_long_name") == "a_model_\nwith_a_long_\nname"
    assert wrap_name("averyveryverylongname") == "averyveryver\nylongname"
    assert wrap_name("model (baseline)") == "model\n(baseline)"


def test_nice_scale_bar_lengths():
    assert [nice_length(x) for x in (16.0, 51.2, 200.0, 3.0, 40.0)] == [2, 10, 50, 0.5, 10]


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
