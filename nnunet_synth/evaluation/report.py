"""report.md and its PNG plots for a cross-dataset evaluation.

Plots (matplotlib, Agg backend, written atomically):
- per test set and label: box plots of Dice and HD95 by model;
- per test set, label and compared model: paired per-case lines from the
  baseline to that model (green: Dice gain, red: loss, grey: equal);
- per test set, label and compared model: a grid of example cases with the
  largest Dice gains and losses (image, reference, baseline, other model),
  showing the slice with the most reference foreground.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_synth.atomic import atomic_path, write_text_atomic
from nnunet_synth.evaluation.testsets import TestSet


@dataclass
class ExamplePanel:
    """One row of the example grid: 2D arrays of the same shape, and the Dice of both models."""

    case: str
    image: np.ndarray
    reference: np.ndarray
    baseline: np.ndarray
    other: np.ndarray
    baseline_dice: float
    other_dice: float


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


def boxplot_by_model(values: dict[str, dict[str, dict]], title: str, path: Path,
                     metrics: tuple[str, ...] = ("Dice", "HD95")) -> Path:
    """``values[model][case]`` holds a case's metric dict; NaN values are left out and counted in the labels."""
    plt = _pyplot()
    models = list(values)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 0.6 * len(models), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        data = [np.array([m[metric] for m in values[model].values()], float) for model in models]
        finite = [d[np.isfinite(d)] for d in data]
        ax.boxplot(finite, showmeans=True)
        ax.set_xticks(range(1, len(models) + 1), [f"{model}\n(n={len(f)})" for model, f in zip(models, finite)])
        ax.set_ylabel(metric + (" (mm)" if metric in ("HD95", "HD95_pooled", "ASSD") else ""))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def paired_lines(baseline: dict[str, float], other: dict[str, float], baseline_name: str, other_name: str,
                 title: str, path: Path, metric: str = "Dice") -> Path:
    """One line per case from its baseline value to its value under the other model."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.8, 4.2))
    for case in sorted(baseline):
        a, b = baseline[case], other[case]
        if not (math.isfinite(a) and math.isfinite(b)):
            continue
        color = "tab:green" if b > a else "tab:red" if b < a else "grey"
        ax.plot([0, 1], [a, b], color=color, alpha=0.6, marker="o", markersize=3)
    ax.set_xticks([0, 1], [baseline_name, other_name])
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def pick_slice(reference: np.ndarray, *others: np.ndarray) -> int:
    """Index along axis 0 with the most reference foreground (else the most predicted foreground)."""
    for volume in (reference,) + others:
        counts = volume.reshape(volume.shape[0], -1).sum(1)
        if counts.max() > 0:
            return int(counts.argmax())
    return reference.shape[0] // 2


def example_grid(panels: list[ExamplePanel], baseline_name: str, other_name: str, title: str, path: Path) -> Path:
    plt = _pyplot()
    columns = ("image", "reference", baseline_name, other_name)
    fig, axes = plt.subplots(len(panels), 4, figsize=(10, 2.6 * len(panels)), squeeze=False)
    for row, panel in zip(axes, panels):
        lo, hi = np.percentile(panel.image, [1, 99])
        masks = (None, panel.reference, panel.baseline, panel.other)
        for ax, column, mask in zip(row, columns, masks):
            ax.imshow(panel.image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            if mask is not None and mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=["yellow" if column == "reference" else "cyan"],
                           linewidths=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{panel.case}\nDice {panel.other_dice - panel.baseline_dice:+.3f}", fontsize=8)
        row[2].set_title(f"{baseline_name}: Dice {panel.baseline_dice:.3f}", fontsize=8)
        row[3].set_title(f"{other_name}: Dice {panel.other_dice:.3f}", fontsize=8)
        row[1].set_title("reference", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def select_examples(baseline: dict[str, float], other: dict[str, float], n: int) -> list[str]:
    """Up to ``n`` cases with the largest gains, then up to ``n`` with the largest losses (Dice, other - baseline)."""
    deltas = {c: other[c] - baseline[c] for c in baseline if math.isfinite(baseline[c]) and math.isfinite(other[c])}
    ranked = sorted(deltas, key=lambda c: (-deltas[c], c))
    gains = [c for c in ranked if deltas[c] > 0][:n]
    losses = [c for c in reversed(ranked) if deltas[c] < 0 and c not in gains][:n]
    return gains + losses


def load_panel(test: TestSet, case: str, pred_base: Path, pred_other: Path, reader_writer, label_key,
               base_dice: float, other_dice: float) -> ExamplePanel:
    """One case's image, reference and both predictions as 2D masks of ``label_key`` (a label or a region)."""
    image, _ = reader_writer.read_images(test.cases[case][:1])
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


def write_plots(values: dict, baseline: str, label_names: dict, tests: dict[str, TestSet], output: Path,
                reader_writer, n_examples: int) -> list[tuple[str, Path]]:
    """Every plot of a cross-eval under ``output/plots``; returns (caption, png path) pairs for the report.

    ``values[test][model][label][case]`` holds a case's metric dict; predictions
    are read from ``output/predictions/MODEL/TEST``.
    """
    images = []
    plots = output / "plots"
    for t, test in tests.items():
        models = list(values[t])
        for key in values[t][baseline]:
            label = label_names[key]
            per_model = {m: values[t][m][key] for m in models}
            images.append((f"{t} / {label}: Dice and HD95 by model",
                           boxplot_by_model(per_model, f"{t} / {label}",
                                            plots / f"box_{safe_name(t)}_{safe_name(label)}.png")))
            base_dice = {c: v["Dice"] for c, v in per_model[baseline].items()}
            for other in (m for m in models if m != baseline):
                other_dice = {c: v["Dice"] for c, v in per_model[other].items()}
                stem = f"{safe_name(t)}_{safe_name(label)}_{other}"
                images.append((f"{t} / {label}: per-case Dice, {baseline} vs {other}",
                               paired_lines(base_dice, other_dice, baseline, other, f"{t} / {label}",
                                            plots / f"paired_{stem}.png")))
                chosen = select_examples(base_dice, other_dice, n_examples)
                if chosen:
                    panels = [load_panel(test, c, output / "predictions" / baseline / t,
                                         output / "predictions" / other / t, reader_writer, key,
                                         base_dice[c], other_dice[c]) for c in chosen]
                    images.append((f"{t} / {label}: largest gains and losses of {other}",
                                   example_grid(panels, baseline, other, f"{t} / {label}",
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
              "- `comparisons.csv`: the paired comparisons above.", ""]
    write_text_atomic(path, "\n".join(lines))
    return path
