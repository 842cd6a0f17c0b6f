"""Mask erosion: the generated lesion's mask shrunk by an elliptical kernel, so it fits the painted lesion.

The kernel is a disc of radius ``erosion_px`` pixels, or of ``erosion_mm``
millimetres through the case spacing (an ellipse in pixels where the spacing
is anisotropic). A pixel stays in the mask iff the kernel centred on it lies
inside the mask (``scipy.ndimage.binary_erosion``).
"""
from __future__ import annotations

import numpy as np

from nnunet_synth.errors import SynthError


def radii(erosion_px: int, erosion_mm: float | None, spacing) -> tuple[float, float]:
    """The kernel's radii in pixels along (y, x)."""
    if erosion_mm is not None:
        if erosion_mm < 0:
            raise SynthError(f"--erosion-mm must be at least 0, got {erosion_mm}")
        return float(erosion_mm / spacing[0]), float(erosion_mm / spacing[1])
    if erosion_px < 0:
        raise SynthError(f"--erosion-px must be at least 0, got {erosion_px}")
    return float(erosion_px), float(erosion_px)


def kernel(ry: float, rx: float) -> np.ndarray:
    """bool ellipse with radii (ry, rx) pixels: the pixels (dy, dx) with (dy/ry)^2 + (dx/rx)^2 <= 1."""
    hy, hx = int(np.floor(ry)), int(np.floor(rx))
    dy, dx = np.mgrid[-hy:hy + 1, -hx:hx + 1]
    return (dy / max(ry, 1e-9)) ** 2 + (dx / max(rx, 1e-9)) ** 2 <= 1 + 1e-9


def erode(mask: np.ndarray, ry: float, rx: float) -> np.ndarray:
    """``mask`` eroded by the ellipse (empty when nothing survives); unchanged for radii below 1 pixel."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if ry < 1 and rx < 1:
        return mask.copy()
    # border_value=0: the image edge is outside the mask, as everywhere else.
    return ndimage.binary_erosion(mask, structure=kernel(ry, rx), border_value=0)


def erode_lesion(lesion: np.ndarray, ry: float, rx: float) -> tuple[np.ndarray, bool, dict]:
    """(the final lesion mask, kept, the record): eroded, or, if erosion would remove it, uneroded and dropped.

    A dropped lesion is never written empty: the pair keeps its uneroded mask, is marked
    ``kept: false`` and the record says why.
    """
    lesion = np.asarray(lesion, dtype=bool)
    eroded = erode(lesion, ry, rx)
    info = {"radius_px": [round(float(ry), 4), round(float(rx), 4)], "pixels_before": int(lesion.sum()),
            "pixels_after": int(eroded.sum())}
    if eroded.any():
        return eroded, True, info
    info["dropped"] = "the erosion kernel would remove the whole lesion; written uneroded"
    return lesion, False, info
