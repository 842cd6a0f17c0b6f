"""Fidelity without downloaded weights: a Fréchet distance and intensity Wasserstein distances.

- ``frechet_distance``: between two sets of feature vectors (rows), here the
  baseline encoder's global-pooled bottleneck. The formula is MONAI's
  ``compute_frechet_distance``; the matrix square root is scipy's ``sqrtm``
  and its real part is kept, because with fewer cases than feature
  dimensions the covariances are singular and ``sqrtm`` returns tiny
  imaginary parts that are rounding, not signal. The figure depends on the
  set sizes, so compare rows with the same numbers of cases.
- ``wasserstein``: scipy's 1D Wasserstein distance between pooled voxel
  intensities, computed separately inside and outside the lesion
  (foreground = any label > 0).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import linalg, stats

MAX_VOXELS_PER_CASE = 5000


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and of ``b`` (NaN with fewer than 2 rows)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (cases, features) arrays of equal width, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # MONAI's formula with scipy's square root (see the module docstring for the real part).
    covmean = linalg.sqrtm(np.atleast_2d(sigma_a) @ np.atleast_2d(sigma_b)).real
    value = float(np.dot(mu_a - mu_b, mu_a - mu_b) + np.trace(np.atleast_2d(sigma_a))
                  + np.trace(np.atleast_2d(sigma_b)) - 2.0 * np.trace(covmean))
    if not math.isfinite(value):
        # fall back on MONAI's regularised route (epsilon on the diagonals) for a product sqrtm cannot take
        import torch
        from monai.metrics.fid import compute_frechet_distance

        t = torch.from_numpy
        value = float(compute_frechet_distance(t(mu_a), t(np.atleast_2d(sigma_a)), t(mu_b), t(np.atleast_2d(sigma_b))))
    return max(value, 0.0)


def sample_intensities(image: np.ndarray, mask: np.ndarray, seed: int,
                       max_voxels: int = MAX_VOXELS_PER_CASE) -> tuple[np.ndarray, np.ndarray]:
    """(inside, outside): up to ``max_voxels`` values of the first channel each, drawn with ``seed``."""
    values = np.asarray(image)[0].ravel()
    inside = np.asarray(mask).reshape(-1) > 0
    if values.shape != inside.shape:
        raise ValueError(f"image shape {np.shape(image)} does not match mask shape {np.shape(mask)}")
    rng = np.random.default_rng(seed)
    out = []
    for part in (values[inside], values[~inside]):
        if len(part) > max_voxels:
            part = rng.choice(part, max_voxels, replace=False)
        out.append(part.astype(np.float64))
    return out[0], out[1]


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """1D Wasserstein distance of two samples (NaN when either is empty)."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(stats.wasserstein_distance(a, b))
