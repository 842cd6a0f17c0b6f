"""report.md and its PNG plots for a cross-dataset evaluation.

Plots (matplotlib, Agg backend, written atomically), each titled with the
metric, label and test set it shows:
- ``box_TEST_LABEL.png``: per metric (Dice, HD95), one box per model with every
  case drawn as a point; legend for the median line, the mean marker and the
  points; the Dice axis is fixed to [0, 1];
- ``paired_TEST_LABEL_MODEL.png``: Dice and HD95, one line per case from its
  baseline value to its value under the model, coloured by whether the model
  is better (green), worse (red) or equal (grey) for that metric (higher Dice,
  lower HD95 is better), with n and the Wilcoxon p (raw and Holm) on the plot;
- ``examples_TEST_LABEL_MODEL.png``: the cases with the largest Dice gains and,
  in a separate labelled block, the largest losses: image, reference, baseline
  and model, contours of the reference (yellow) and of the column's
  prediction (cyan) with a legend, and a scale bar in mm (in pixels where the
  format has no spacing, as for PNG); for 3D cases the slice with the most
  reference foreground.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_synth.atomic import atomic_path, write_text_atomic
from nnunet_synth.evaluation.testsets import TestSet

LOWER_IS_BETTER = ("HD95", "HD95_pooled", "ASSD")
UNIT_INTERVAL = ("Dice", "IoU", "Precision", "Recall")
BETTER, WORSE, EQUAL = "tab:green", "tab:red", "0.55"
REFERENCE_COLOR, PREDICTION_COLOR = "yellow", "cyan"
MEDIAN_COLOR, POINT_COLOR = "tab:orange", "tab:blue"
PAIRED_METRICS = ("Dice", "HD95")
# Formats nnU-Net reads without a physical spacing (NaturalImage2DIO): their scale bar is in pixels.
PIXEL_FORMATS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass
class ExamplePanel:
    """One row of the example grid: 2D arrays of the same shape, and the Dice of both models.

    ``pixel_size`` is (row, column) spacing in mm, or None where the format has none (the bar is then in pixels).
    """

    case: str
    image: np.ndarray
    reference: np.ndarray
    baseline: np.ndarray
    other: np.ndarray
    baseline_dice: float
    other_dice: float
    pixel_size: tuple[float, float] | None = None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display is needed or expected
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))


def metric_axis_label(metric: str) -> str:
    return metric + (" (mm)" if metric in LOWER_IS_BETTER else "")


def _baseline_title(name: str, sep: str = " ") -> str:
    return name if name == "baseline" else f"{name}{sep}(baseline)"


def _where(label: str, test: str) -> str:
    return f"{label}, test set {test}"


def wrap_name(name: str, width: int = 12) -> str:
    """A model name broken into lines of at most ``width`` characters, after '_', '-', '.' or ' ' where possible."""
    lines, line = [], ""
    for piece in re.split(r"(?<=[_. -])", name):
        while len(piece) > width:  # one piece longer than a line: cut it
            if line:
                lines.append(line)
                line = ""
            lines.append(piece[:width])
            piece = piece[width:]
        if len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    return "\n".join(ln.rstrip() for ln in (lines + [line] if line else lines))


def _model_ticks(ax, names: list[str]) -> None:
    # Horizontal, wrapped names: each gets a tick's width, so neighbouring labels never overlap.
    ax.set_xticks(range(1, len(names) + 1), names)


def boxplot_by_model(values: dict[str, dict[str, dict]], test: str, label: str, path: Path,
                     metrics: tuple[str, ...] = ("Dice", "HD95")) -> Path:
    """``values[model][case]`` holds a case's metric dict; NaN values are left out and counted in the labels."""
    return _save(boxplot_figure(values, test, label, metrics), path)


def boxplot_figure(values: dict[str, dict[str, dict]], test: str, label: str,
                   metrics: tuple[str, ...] = ("Dice", "HD95")):
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    models = list(values)
    width = max(3.4, 1.05 * len(models) + 1.2)
    fig, axes = plt.subplots(1, len(metrics), figsize=(width * len(metrics), 4.2), squeeze=False, layout="constrained")
    rng = np.random.default_rng(0)  # the same jitter on every run
    for ax, metric in zip(axes[0], metrics):
        data = [np.array([m[metric] for m in values[model].values()], float) for model in models]
        finite = [d[np.isfinite(d)] for d in data]
        # Points replace the fliers: every case is drawn once.
        ax.boxplot(finite, showmeans=True, showfliers=False, widths=0.55,
                   medianprops=dict(color=MEDIAN_COLOR, linewidth=2),
                   meanprops=dict(marker="D", markerfacecolor="white", markeredgecolor="black", markersize=6))
        for i, d in enumerate(finite, start=1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=14, color=POINT_COLOR, alpha=0.55, zorder=3,
                       linewidths=0, clip_on=False)
        _model_ticks(ax, [f"{wrap_name(model)}\n(n={len(f)})" for model, f in zip(models, finite)])
        ax.set_ylabel(metric_axis_label(metric))
        if metric in UNIT_INTERVAL:
            ax.set_ylim(0, 1)
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(f"{metric}: {_where(label, test)}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles = [Line2D([], [], color=MEDIAN_COLOR, linewidth=2, label="median"),
               Line2D([], [], marker="D", linestyle="", markerfacecolor="white", markeredgecolor="black",
                      label="mean"),
               Line2D([], [], marker="o", linestyle="", color=POINT_COLOR, alpha=0.55, label="one case"),
               Patch(facecolor="white", edgecolor="black", label="box: quartiles; whiskers: 1.5 IQR")]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    return fig


def _p_text(row: dict | None) -> str:
    if row is None:
        return "no test"
    text = f"n = {row['n']}, Wilcoxon p = {_fmt_p(row['wilcoxon_p'])} (Holm {_fmt_p(row['wilcoxon_p_holm'])})"
    min_p = row.get("wilcoxon_min_p", float("nan"))
    if isinstance(min_p, float) and math.isfinite(min_p) and min_p > row.get("alpha", 0.05):
        text += f"\nn too small: p can never be < {row.get('alpha', 0.05):g}"
    return text


def paired_lines(baseline: dict[str, dict], other: dict[str, dict], baseline_name: str, other_name: str,
                 test: str, label: str, path: Path, rows: dict[str, dict] | None = None,
                 metrics: tuple[str, ...] = PAIRED_METRICS) -> Path:
    """Per metric, one line per case from its baseline value to its value under the other model.

    ``baseline[case]`` / ``other[case]`` hold a case's metric dict; ``rows[metric]`` is that metric's comparison
    row (n and p-values are printed on the panel).
    """
    return _save(paired_figure(baseline, other, baseline_name, other_name, test, label, rows, metrics), path)


def paired_figure(baseline: dict[str, dict], other: dict[str, dict], baseline_name: str, other_name: str,
                  test: str, label: str, rows: dict[str, dict] | None = None,
                  metrics: tuple[str, ...] = PAIRED_METRICS):
    plt = _pyplot()
    from matplotlib.lines import Line2D

    rows = rows or {}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.9 * len(metrics), 4.6), squeeze=False, layout="constrained")
    counts = {"better": 0, "worse": 0, "equal": 0}
    for ax, metric in zip(axes[0], metrics):
        lower_better = metric in LOWER_IS_BETTER
        for case in sorted(baseline):
            a, b = baseline[case][metric], other[case][metric]
            if not (math.isfinite(a) and math.isfinite(b)):
                continue
            better = b < a if lower_better else b > a
            kind = "equal" if a == b else "better" if better else "worse"
            if metric == metrics[0]:
                counts[kind] += 1
            color = {"better": BETTER, "worse": WORSE, "equal": EQUAL}[kind]
            ax.plot([0, 1], [a, b], color=color, alpha=0.65, marker="o", markersize=3, clip_on=False)
        ax.set_xticks([0, 1], [wrap_name(_baseline_title(baseline_name, " ")), wrap_name(other_name)])
        ax.set_xlim(-0.3, 1.3)
        if metric in UNIT_INTERVAL:
            ax.set_ylim(0, 1)
        else:
            ax.set_ylim(bottom=0)
        ax.set_ylabel(metric_axis_label(metric))
        ax.set_title(f"{metric}: {_where(label, test)}\n{_p_text(rows.get(metric))}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles = [Line2D([], [], color=BETTER, marker="o", markersize=3, label=f"{other_name} better than baseline"),
               Line2D([], [], color=WORSE, marker="o", markersize=3, label=f"{other_name} worse than baseline"),
               Line2D([], [], color=EQUAL, marker="o", markersize=3, label="equal")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False,
               title="one line per case (higher Dice, lower HD95 is better)", title_fontsize=8)
    return fig


def pick_slice(reference: np.ndarray, *others: np.ndarray) -> int:
    """Index along axis 0 with the most reference foreground (else the most predicted foreground)."""
    for volume in (reference,) + others:
        counts = volume.reshape(volume.shape[0], -1).sum(1)
        if counts.max() > 0:
            return int(counts.argmax())
    return reference.shape[0] // 2


def nice_length(total: float) -> float:
    """A round scale-bar length (1, 2 or 5 times a power of ten) of about a quarter of ``total``."""
    target = total / 4
    power = 10 ** math.floor(math.log10(target))
    return max(step * power for step in (1, 2, 5) if step * power <= target)


def _scale_bar(ax, panel: ExamplePanel) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    width_px = panel.image.shape[1]
    per_px = panel.pixel_size[1] if panel.pixel_size else 1.0
    length = nice_length(width_px * per_px)
    unit = "mm" if panel.pixel_size else "px"
    bar = AnchoredSizeBar(ax.transData, length / per_px, f"{length:g} {unit}", "lower right", pad=0.2, borderpad=0.3,
                          color="white", frameon=True, size_vertical=max(1, panel.image.shape[0] / 80),
                          fontproperties={"size": 7})
    bar.patch.set(facecolor="black", alpha=0.55, linewidth=0)  # readable on bright tissue too
    ax.add_artist(bar)


def _example_rows(subfig, panels: list[ExamplePanel], baseline_name: str, other_name: str, heading: str) -> None:
    columns = ("image", "reference", _baseline_title(baseline_name), other_name)
    axes = subfig.subplots(len(panels), 4, squeeze=False)
    subfig.suptitle(heading, fontsize=10, fontweight="bold")
    for r, (row, panel) in enumerate(zip(axes, panels)):
        lo, hi = np.percentile(panel.image, [1, 99])
        aspect = panel.pixel_size[0] / panel.pixel_size[1] if panel.pixel_size else 1.0
        masks = (None, panel.reference, panel.baseline, panel.other)
        dice = (None, None, panel.baseline_dice, panel.other_dice)
        for c, (ax, mask, d) in enumerate(zip(row, masks, dice)):
            ax.imshow(panel.image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect=aspect)
            if c >= 1 and panel.reference.any():
                ax.contour(panel.reference.astype(float), levels=[0.5], colors=[REFERENCE_COLOR],
                           linewidths=1.0 if c == 1 else 0.8, linestyles="solid" if c == 1 else "dashed")
            if c >= 2:
                if mask.any():
                    ax.contour(mask.astype(float), levels=[0.5], colors=[PREDICTION_COLOR], linewidths=1.0)
                ax.text(0.03, 0.97, f"Dice {d:.3f}" + ("" if mask.any() else "\n(empty)"), transform=ax.transAxes,
                        va="top", ha="left", fontsize=7, color="white",
                        bbox=dict(facecolor="black", alpha=0.6, pad=1.5, linewidth=0))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
        _scale_bar(row[0], panel)
        row[0].set_ylabel(f"{panel.case}\nΔDice {panel.other_dice - panel.baseline_dice:+.3f}", fontsize=8)


def example_grid(gains: list[ExamplePanel], losses: list[ExamplePanel], baseline_name: str, other_name: str,
                 test: str, label: str, path: Path) -> Path:
    """Largest gains and largest losses in two labelled blocks of rows (image, reference, baseline, other)."""
    return _save(example_figure(gains, losses, baseline_name, other_name, test, label), path)


def example_figure(gains: list[ExamplePanel], losses: list[ExamplePanel], baseline_name: str, other_name: str,
                   test: str, label: str):
    plt = _pyplot()
    from matplotlib.lines import Line2D

    blocks = [(panels, heading) for panels, heading in
              ((gains, f"Largest Dice gains: {other_name} better than {baseline_name}"),
               (losses, f"Largest Dice losses: {other_name} worse than {baseline_name}")) if panels]
    first = (gains or losses)[0]
    aspect = first.image.shape[0] / first.image.shape[1]
    if first.pixel_size:
        aspect *= first.pixel_size[0] / first.pixel_size[1]
    panel_w = 2.0
    n_rows = sum(len(p) for p, _ in blocks)
    # Height from the images' own aspect, plus room for titles: no empty bands between rows.
    # (an image axis ends up about 0.93 panel widths wide once the row labels have their room; a slightly
    # short figure narrows the images a little, a tall one would open bands between the rows)
    height = n_rows * 0.9 * panel_w * aspect + 0.5 * len(blocks) + 0.7
    fig = plt.figure(figsize=(4 * panel_w + 0.6, height), layout="constrained")
    subfigs = fig.subfigures(len(blocks), 1, height_ratios=[len(p) for p, _ in blocks], squeeze=False)[:, 0]
    for subfig, (panels, heading) in zip(subfigs, blocks):
        _example_rows(subfig, panels, baseline_name, other_name, heading)
    fig.suptitle(f"Examples: {_where(label, test)}", fontsize=11)
    handles = [Line2D([], [], color=REFERENCE_COLOR, linewidth=1.5, label="reference (dashed where drawn over a prediction)"),
               Line2D([], [], color=PREDICTION_COLOR, linewidth=1.5, label="prediction of the column's model")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=True, facecolor="0.35",
               labelcolor="white")
    return fig


def select_examples(baseline: dict[str, float], other: dict[str, float], n: int) -> tuple[list[str], list[str]]:
    """Up to ``n`` cases with the largest gains and up to ``n`` with the largest losses (Dice, other - baseline)."""
    deltas = {c: other[c] - baseline[c] for c in baseline if math.isfinite(baseline[c]) and math.isfinite(other[c])}
    ranked = sorted(deltas, key=lambda c: (-deltas[c], c))
    gains = [c for c in ranked if deltas[c] > 0][:n]
    losses = [c for c in reversed(ranked) if deltas[c] < 0 and c not in gains][:n]
    return gains, losses


def load_panel(test: TestSet, case: str, pred_base: Path, pred_other: Path, reader_writer, label_key,
               base_dice: float, other_dice: float) -> ExamplePanel:
    """One case's image, reference and both predictions as 2D masks of ``label_key`` (a label or a region)."""
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
    # The slice is along axis 0, so its pixels are spacing[1:] (nnU-Net's 2D readers put 999 on the dummy axis).
    pixel_mm = None if test.file_ending.lower() in PIXEL_FORMATS else tuple(float(s) for s in props["spacing"][-2:])
    return ExamplePanel(case, *arrays, baseline_dice=base_dice, other_dice=other_dice, pixel_size=pixel_mm)


def write_plots(values: dict, baseline: str, label_names: dict, tests: dict[str, TestSet], output: Path,
                reader_writer, n_examples: int, comparisons: list[dict] | None = None) -> list[tuple[str, Path]]:
    """Every plot of a cross-eval under ``output/plots``; returns (caption, png path) pairs for the report.

    ``values[test][model][label][case]`` holds a case's metric dict; predictions
    are read from ``output/predictions/MODEL/TEST``; ``comparisons`` (the rows of
    ``compare_with_baseline``) give the n and p-values printed on the paired plots.
    """
    images = []
    plots = output / "plots"
    rows = {(r["test_set"], r["label"], r["model"], r["metric"]): r for r in comparisons or []}
    for t, test in tests.items():
        models = list(values[t])
        for key in values[t][baseline]:
            label = label_names[key]
            per_model = {m: values[t][m][key] for m in models}
            images.append((f"{t} / {label}: Dice and HD95 by model",
                           boxplot_by_model(per_model, t, label, plots / f"box_{safe_name(t)}_{safe_name(label)}.png")))
            base_dice = {c: v["Dice"] for c, v in per_model[baseline].items()}
            for other in (m for m in models if m != baseline):
                other_dice = {c: v["Dice"] for c, v in per_model[other].items()}
                stem = f"{safe_name(t)}_{safe_name(label)}_{other}"
                metric_rows = {m: rows[(t, label, other, m)] for m in PAIRED_METRICS if (t, label, other, m) in rows}
                images.append((f"{t} / {label}: per-case Dice and HD95, {baseline} vs {other}",
                               paired_lines(per_model[baseline], per_model[other], baseline, other, t, label,
                                            plots / f"paired_{stem}.png", metric_rows)))
                gains, losses = select_examples(base_dice, other_dice, n_examples)
                if gains or losses:
                    def panels(cases):
                        return [load_panel(test, c, output / "predictions" / baseline / t,
                                           output / "predictions" / other / t, reader_writer, key,
                                           base_dice[c], other_dice[c]) for c in cases]

                    images.append((f"{t} / {label}: largest Dice gains and losses of {other}",
                                   example_grid(panels(gains), panels(losses), baseline, other, t, label,
                                                plots / f"examples_{stem}.png")))
    return images


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def write_report_md(path: Path, summary: dict, comparison_rows: list[dict], images: list[tuple[str, Path]]) -> Path:
    """The human-readable report; ``images`` are (caption, png path) pairs, linked relative to the report."""
    lines = ["# Cross-dataset evaluation", ""]
    lines += ["Models:", ""]
    for name, spec in summary["models"].items():
        lines.append(f"- **{name}**{' (baseline)' if name == summary['baseline'] else ''}: {spec['description']}")
    lines += ["", "Test sets:", ""]
    for name, info in summary["test_sets"].items():
        lines.append(f"- **{name}**: {info['n_cases']} cases, images `{info['images']}`, labels `{info['labels']}`")
    run = summary.get("run")
    if run:
        versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items())
        lines += ["", "Run:", "", f"- command: `{run['command']}`", f"- date (UTC): {run['date']}",
                  f"- device: {run['device']} ({run['device_name']})", f"- Python {run['python']}; {versions}"]
        if "checkpoint" in summary:
            lines.append(f"- prediction: {summary['checkpoint']}, tile step {summary['tile_step_size']:g}, "
                         f"mirroring {'on' if summary['use_mirroring'] else 'off'}; nnU-Net's output in "
                         f"`{Path(summary['log']).name}`")
    if summary.get("label_map"):
        mapping = ", ".join(f"{k} -> {v}" for k, v in summary["label_map"].items())
        lines += ["", f"Label values of the test sets were mapped before evaluation: {mapping}."]
    lines += ["", "## Means per test set", "",
              "Each cell: mean ± SD; median [Q1, Q3] (n), over the cases with a finite value (nanmean; SD with "
              "ddof=1). HD95 and ASSD in mm; a case where exactly one of reference and prediction is empty counts "
              "with the image diagonal as its distance.", "",
              "| test set | label | model | Dice | HD95 (mm) | ASSD (mm) | empty pred | empty ref |",
              "|---|---|---|---|---|---|---|---|"]
    label_names = summary.get("label_names", {})
    for test, per_model in summary["results"].items():
        for model, result in per_model.items():
            for label, means in result["mean"].items():
                nv, empty = result["n_valid"][label], result["empty_counts"][label]
                spread = result.get("spread", {}).get(label, {})

                def cell(metric, digits):
                    s = spread.get(metric)
                    if s is None:
                        return f"{_fmt(means[metric], digits)} ({nv[metric]})"
                    return (f"{_fmt(means[metric], digits)} ± {_fmt(s['sd'], digits)}; {_fmt(s['median'], digits)} "
                            f"[{_fmt(s['q1'], digits)}, {_fmt(s['q3'], digits)}] ({nv[metric]})")

                lines.append(f"| {test} | {label_names.get(label, label)} | {model} | {cell('Dice', 3)} | "
                             f"{cell('HD95', 2)} | {cell('ASSD', 2)} | {empty['empty_pred']} | {empty['empty_ref']} |")
    alpha = summary.get("alpha", 0.05)
    lines += ["", f"## Paired comparisons against {summary['baseline']}", "",
              "Difference = model - baseline on the same cases (positive is better for Dice, negative for HD95 "
              "and ASSD). Wilcoxon signed-rank is the primary test; p-values are Holm-corrected across test sets "
              f"and labels for each metric and model. Bootstrap: {summary['n_resamples']} paired resamples, "
              f"{int(summary['confidence'] * 100)}% BCa intervals, seed {summary['seed']}. \"min p\" is the smallest "
              f"p-value the Wilcoxon test can give with this n whatever the data; where it is above {alpha:g} the "
              "row is marked **n too small**: the test cannot reach the significance level, so a large p there "
              "is no evidence that the models are alike.", "",
              "| test set | label | metric | model | n | mean diff [CI] ± SD | median diff [CI] | IQR of diff | "
              "Wilcoxon p (Holm) | min p | t-test p (Holm) | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in comparison_rows:
        digits = 3 if r["metric"] in ("Dice", "IoU", "Precision", "Recall") else 2
        min_p = r.get("wilcoxon_min_p", float("nan"))
        small = isinstance(min_p, float) and not math.isnan(min_p) and min_p > alpha
        sd = f" ± {_fmt(r['diff_sd'], digits)}" if "diff_sd" in r else ""
        iqr = f"[{_fmt(r['diff_q1'], digits)}, {_fmt(r['diff_q3'], digits)}]" if "diff_q1" in r else "n/a"
        lines.append(
            f"| {r['test_set']} | {r['label']} | {r['metric']} | {r['model']} | "
            f"{r['n']}{' **n too small**' if small else ''} | "
            f"{_fmt(r['mean_diff'], digits)} [{_fmt(r['mean_diff_ci_low'], digits)}, {_fmt(r['mean_diff_ci_high'], digits)}]{sd} | "
            f"{_fmt(r['median_diff'], digits)} [{_fmt(r['median_diff_ci_low'], digits)}, {_fmt(r['median_diff_ci_high'], digits)}] | "
            f"{iqr} | {_fmt_p(r['wilcoxon_p'])} ({_fmt_p(r['wilcoxon_p_holm'])}) | {_fmt_p(min_p)} | "
            f"{_fmt_p(r['ttest_p'])} ({_fmt_p(r['ttest_p_holm'])}) | {r['note']} |")
    lines += ["", "## Plots", ""]
    for caption, image in images:
        lines += [f"### {caption}", "", f"![{caption}]({image.relative_to(path.parent).as_posix()})", ""]
    lines += ["## Files", "", "- `per_case.csv`: one row per test set, model, case and label.",
              "- `summary.json`: means, valid counts, model and test-set descriptions, comparisons.",
              "- `comparisons.csv`: the paired comparisons above.",
              "- `predict.log`: nnU-Net's own output while predicting.", ""]
    write_text_atomic(path, "\n".join(lines))
    return path
