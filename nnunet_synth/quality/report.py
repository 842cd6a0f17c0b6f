"""``inspect/report.md`` beside a synthetic dataset, with its PNGs, ``summary.json`` and ``per_case.csv``.

Figures (matplotlib, Agg backend, written atomically like cross-eval's):
- ``consistency.png``: the distribution of consistency, with the band and
  the baseline's own validation Dice for comparison;
- ``similarity.png``: each synthetic case's similarity to its nearest real
  training case, next to the same figure for the real validation cases
  (what two different real cases look like), with the near-copy threshold;
- ``intensity.png``: intensity histograms inside and outside the lesion;
- ``consistency_grid.png``: the best and worst cases by consistency, as
  real source | synthetic | overlay (synthetic mask green, baseline
  prediction red);
- ``memorization_grid.png``: the most similar pairs, synthetic | nearest real.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from nnunet_synth.atomic import write_text_atomic
from nnunet_synth.evaluation.report import _pyplot, _save


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _display(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, (0.5, 99.5))
    return np.clip((image - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(image, dtype=float)


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def consistency_plot(summary: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    values = _finite(r["consistency"] for r in summary["cases"])
    bins = np.linspace(0, 1, 21)
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.7, label=f"synthetic (n={len(values)})")
    base = _finite((summary.get("baseline_validation_dice") or {}).values())
    if base:
        ax.hist(base, bins=bins, color="tab:grey", alpha=0.6, label=f"baseline on real validation (n={len(base)})")
    if summary.get("band"):
        for x in summary["band"]:
            ax.axvline(x, color="tab:red", linestyle="--")
    ax.set_xlabel("Dice of the baseline's prediction against the mask")
    ax.set_ylabel("cases")
    ax.set_title("Segmentation consistency")
    ax.legend(fontsize=8)
    return _save(fig, path)


def similarity_plot(summary: dict, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    synthetic = [r["similarity"] for r in summary["cases"]]
    real = list(summary["real_validation_similarity"].values())
    low = min(synthetic + real + [0.0])
    bins = np.linspace(low, 1, 21)
    ax.hist(synthetic, bins=bins, color="tab:blue", alpha=0.7, label=f"synthetic (n={len(synthetic)})")
    if real:
        ax.hist(real, bins=bins, color="tab:grey", alpha=0.6, label=f"real validation (n={len(real)})")
    ax.axvline(summary["copy_threshold"], color="tab:red", linestyle="--", label="near-copy threshold")
    ax.set_xlabel(f"{summary['similarity_measure']} with the nearest real training case")
    ax.set_ylabel("cases")
    ax.set_title("Memorization")
    ax.legend(fontsize=8)
    return _save(fig, path)


def intensity_plot(syn, rea, synth_ids, train_ids, val_ids, path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, part in zip(axes, ("inside", "outside")):
        sets = (("real training", rea, train_ids, "tab:grey"), ("real validation", rea, val_ids, "tab:green"),
                ("synthetic", syn, synth_ids, "tab:blue"))
        pooled = {name: np.concatenate([getattr(store, part)[c] for c in ids] or [np.zeros(0)])
                  for name, store, ids, _ in sets}
        everything = np.concatenate(list(pooled.values()))
        if len(everything) == 0:
            ax.set_title(f"{part} the lesion: no voxels")
            continue
        bins = np.linspace(*np.percentile(everything, (0.5, 99.5)), 41) if np.ptp(everything) > 0 else 10
        for name, _, _, colour in sets:
            if len(pooled[name]):
                ax.hist(pooled[name], bins=bins, density=True, histtype="step", color=colour, linewidth=1.5,
                        label=name)
        ax.set_title(f"Intensity {part} the lesion")
        ax.set_xlabel("intensity (first channel)")
        ax.legend(fontsize=8)
    return _save(fig, path)


def by_consistency(summary: dict, n: int) -> list[tuple[str, dict]]:
    """("best", row) for the n most consistent cases, then ("worst", row) for the n least (no case twice)."""
    ranked = sorted((r for r in summary["cases"] if math.isfinite(r["consistency"])),
                    key=lambda r: (-r["consistency"], r["case"]))
    return [("best", r) for r in ranked[:n]] + [("worst", r) for r in ranked[::-1][:n] if r not in ranked[:n]]


def by_similarity(summary: dict, n: int) -> list[dict]:
    return sorted(summary["cases"], key=lambda r: (-r["similarity"], r["case"]))[:n]


def shown_cases(summary: dict, n: int) -> set[str]:
    """The synthetic cases the grids show."""
    return {r["case"] for _, r in by_consistency(summary, n)} | {r["case"] for r in by_similarity(summary, n)}


def consistency_grid(summary: dict, syn, rea, n: int, path: Path) -> Path | None:
    chosen = by_consistency(summary, n)
    if not chosen:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(chosen), 3, figsize=(7.5, 2.5 * len(chosen)), squeeze=False)
    for row, (which, r) in zip(axes, chosen):
        view = syn.views[r["case"]]
        source = rea.views.get(r["source_case"])
        panels = (source.image if source is not None and source.image.shape == view.image.shape else None,
                  view.image, view.image)
        titles = (f"real {r['source_case']}", f"{r['case']}", f"{which}: consistency {r['consistency']:.3f}")
        for ax, image, title in zip(row, panels, titles):
            ax.axis("off")
            ax.set_title(title, fontsize=8)
            if image is not None:
                ax.imshow(_display(image), cmap="gray")
        row[2].contour(view.mask > 0, levels=[0.5], colors="lime", linewidths=1)
        if view.prediction is not None and (view.prediction > 0).any():
            row[2].contour(view.prediction > 0, levels=[0.5], colors="red", linewidths=0.7)
    fig.tight_layout()
    fig.suptitle("real | synthetic | overlay (green: synthetic mask, red: baseline prediction)", fontsize=9, y=1.0)
    return _save(fig, path)


def memorization_grid(summary: dict, syn, rea, n: int, path: Path) -> Path:
    ranked = by_similarity(summary, n)
    plt = _pyplot()
    fig, axes = plt.subplots(len(ranked), 2, figsize=(5, 2.5 * len(ranked)), squeeze=False)
    for row, r in zip(axes, ranked):
        for ax, image, title in ((row[0], syn.views[r["case"]].image, r["case"]),
                                 (row[1], rea.views[r["nearest_real"]].image,
                                  f"{r['nearest_real']}: {r['similarity']:.3f}")):
            ax.imshow(_display(image), cmap="gray")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.suptitle(f"most similar pairs ({summary['similarity_measure']}): synthetic | nearest real", fontsize=9, y=1.0)
    return _save(fig, path)


def summary_table(summary: dict) -> list[str]:
    """The one table that sits next to cross-eval's: the synthetic set and the real baseline row."""
    cases = summary["cases"]
    consistency = _finite(r["consistency"] for r in cases)
    base_dice = _finite((summary.get("baseline_validation_dice") or {}).values())
    real_sim = list(summary["real_validation_similarity"].values())
    synthetic_row, real_row = summary["fidelity"]
    lines = ["| set | n | consistency (Dice) | kept | Fréchet (encoder) | W1 inside | W1 outside | "
             f"nearest-real {summary['similarity_measure']} (median) | near-copies |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines.append(f"| synthetic vs real validation | {len(cases)} | "
                 f"{_fmt(float(np.mean(consistency))) if consistency else 'n/a'} | "
                 f"{summary['n_kept']}/{len(cases)} | {_fmt(synthetic_row['frechet'], 2)} | "
                 f"{_fmt(synthetic_row['wasserstein_inside'], 2)} | {_fmt(synthetic_row['wasserstein_outside'], 2)} | "
                 f"{_fmt(float(np.median([r['similarity'] for r in cases])))} | "
                 f"{summary['near_copies']} ({summary['near_copies'] / len(cases):.0%}) |")
    lines.append(f"| real training vs real validation | {real_row['n']} | "
                 f"{_fmt(float(np.mean(base_dice))) if base_dice else 'n/a'} | — | {_fmt(real_row['frechet'], 2)} | "
                 f"{_fmt(real_row['wasserstein_inside'], 2)} | {_fmt(real_row['wasserstein_outside'], 2)} | "
                 f"{_fmt(float(np.median(real_sim))) if real_sim else 'n/a'} | "
                 f"{sum(v >= summary['copy_threshold'] for v in real_sim)} |")
    return lines


def per_case_csv(summary: dict) -> str:
    buffer = io.StringIO()
    fields = ["case", "source_case", "kind", "consistency", "nearest_real", "similarity", "near_copy", "kept"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in summary["cases"]:
        writer.writerow({k: r[k] for k in fields})
    return buffer.getvalue()


def write_report(folder: Path, summary: dict, syn, rea, n_examples: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    synth_ids = [r["case"] for r in summary["cases"]]
    train_ids, val_ids = summary["real_training_cases"], summary["real_validation_cases"]
    images = [("Consistency", consistency_plot(summary, folder / "consistency.png")) if summary["baseline"] else None,
              ("Memorization", similarity_plot(summary, folder / "similarity.png")),
              ("Intensity histograms", intensity_plot(syn, rea, synth_ids, train_ids, val_ids,
                                                      folder / "intensity.png"))]
    if summary["baseline"]:
        grid = consistency_grid(summary, syn, rea, n_examples, folder / "consistency_grid.png")
        images.append(("Best and worst by consistency", grid) if grid else None)
    images.append(("Most similar pairs", memorization_grid(summary, syn, rea, n_examples,
                                                           folder / "memorization_grid.png")))
    images = [i for i in images if i is not None]
    write_text_atomic(folder / "per_case.csv", per_case_csv(summary))
    write_text_atomic(folder / "summary.json", json.dumps({k: v for k, v in summary.items() if k != "report"},
                                                          indent=2, default=float) + "\n")
    path = folder / "report.md"
    write_text_atomic(path, "\n".join(report_lines(summary, images)) + "\n")
    return path


def report_lines(summary: dict, images: list[tuple[str, Path]]) -> list[str]:
    band = summary["band"]
    lines = [f"# Inspection of {summary['synthetic_dataset']}", "",
             f"Real dataset {summary['real_dataset']}, fold {summary['fold']} ({summary['folds']}): "
             f"{summary['n_real_train']} training and {summary['n_real_validation']} validation cases; "
             f"{summary['n_synthetic']} synthetic cases.", ""]
    if summary["baseline"]:
        lines.append(f"Baseline: `{summary['baseline']}` fold {summary['fold']}, "
                     f"{'with' if summary['use_mirroring'] else 'without'} mirroring (TTA).")
    else:
        lines.append("No baseline given (--baseline): no consistency and no Fréchet distance.")
    if band:
        lines.append(f"Band {band[0]:g}:{band[1]:g}: {summary['dropped']} case(s) outside it; "
                     f"{summary['n_kept']} of {summary['n_synthetic']} cases are kept in synthesis.json.")
    lines += ["", "## Summary", ""] + summary_table(summary)
    lines += ["", "Consistency: Dice of the baseline's prediction against the synthetic mask (mean over foreground "
              "labels); in the real row, the baseline's Dice on its own validation cases. Fréchet: between "
              "global-pooled bottleneck features of the baseline's encoder, each set against the real validation "
              "cases (it grows when a set has few cases; compare rows of the same size). W1: Wasserstein distance "
              "of the first channel's intensities against the real validation cases, inside and outside the lesion. "
              f"Nearest-real: similarity with the most similar real training case; near-copy at "
              f">= {summary['copy_threshold']:g}. In the real row, the validation cases are compared with the "
              "training cases.", "", "## Plots", ""]
    for caption, image in images:
        lines += [f"### {caption}", "", f"![{caption}]({image.name})", ""]
    lines += ["## Files", "", "- `per_case.csv`: consistency, nearest real case, similarity and decision per case.",
              "- `summary.json`: everything above.", ""]
    return lines
