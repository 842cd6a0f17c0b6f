"""A PNG grid of example images per scanner, with the lesion contour drawn in."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nnunet_synth.atomic import atomic_path
from nnunet_synth.phantom.anatomy import sample_anatomy
from nnunet_synth.phantom.bmode import ScanGrid, resolve_scanner, simulate


def write_preview(path: str | os.PathLike, scanners=("A", "B", "C"), n_examples: int = 4, seed: int = 0,
                  image_size: int | None = None) -> Path:
    """One row per scanner, one column per scene: the same anatomy imaged by every scanner.

    Images are drawn at their physical size (mm) so the scanners' fields of view and
    resolutions compare directly; the red line is the lesion mask's contour.
    """
    # A bare Figure (no pyplot): no global backend switch, nothing left open in a notebook.
    from matplotlib.figure import Figure

    scanners = [resolve_scanner(s) for s in scanners]
    fig = Figure(figsize=(3.2 * n_examples, 3.0 * len(scanners)))
    axes = fig.subplots(len(scanners), n_examples, squeeze=False)
    for j in range(n_examples):
        anatomy = sample_anatomy(np.random.default_rng([seed, j]))
        for i, scanner in enumerate(scanners):
            image, mask, _ = simulate(scanner, np.random.default_rng([seed, j, i]), image_size, anatomy)
            # Axes in mm of the scene (x lateral, z depth below the probe centre), so that
            # the scanners' fields of view line up; a fan's corners lie above z = 0.
            grid = ScanGrid.for_scanner(scanner.with_size(image_size))
            half = grid.spacing_mm / 2
            extent = (grid.pixel_x[0] - half, grid.pixel_x[-1] + half, grid.pixel_z[-1] + half, grid.pixel_z[0] - half)
            ax = axes[i, j]
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="nearest")
            if mask.any():
                ax.contour(grid.pixel_x, grid.pixel_z, mask, levels=[0.5], colors="red", linewidths=0.8)
            les = anatomy.lesion
            ax.set_title(f"{scanner.name}: {les.kind}, {les.shape}, {les.posterior}", fontsize=7)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(f"scanner {scanner.name} (mm)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
