"""A PNG grid of example images per device, with the lesion contour drawn in."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nnunet_synth.atomic import atomic_path
from nnunet_synth.phantom.anatomy import sample_anatomy
from nnunet_synth.phantom.bmode import resolve_device, simulate


def write_preview(path: str | os.PathLike, devices=("A", "B", "C"), n_examples: int = 4, seed: int = 0,
                  image_size: int | None = None) -> Path:
    """One row per device, one column per scene: the same anatomy imaged by every device.

    Images are drawn at their physical size (mm) so the devices' fields of view and
    resolutions compare directly; the red line is the lesion mask's contour.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = [resolve_device(d) for d in devices]
    fig, axes = plt.subplots(len(devices), n_examples, figsize=(3.2 * n_examples, 3.0 * len(devices)),
                             squeeze=False)
    for j in range(n_examples):
        anatomy = sample_anatomy(np.random.default_rng([seed, j]))
        for i, device in enumerate(devices):
            image, mask, (sy, sx) = simulate(device, np.random.default_rng([seed, j, i]), image_size, anatomy)
            ax = axes[i, j]
            extent = (-image.shape[1] * sx / 2, image.shape[1] * sx / 2, image.shape[0] * sy, 0)
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="nearest")
            if mask.any():
                ax.contour(np.linspace(extent[0], extent[1], mask.shape[1]), np.linspace(0, extent[2], mask.shape[0]),
                           mask, levels=[0.5], colors="red", linewidths=0.8)
            les = anatomy.lesion
            ax.set_title(f"{device.name}: {les.kind}, {les.shape}, {les.posterior}", fontsize=7)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(f"device {device.name} (mm)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
