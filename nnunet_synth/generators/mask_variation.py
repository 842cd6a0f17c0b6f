"""New masks for ``--mode new``: a real mask under a random affine and elastic deformation.

The deformation is drawn in millimetres (so anisotropic CT is deformed like the
anatomy, not like the voxel grid), centred on the mask's foreground, and is
fully determined by the sample's seed. A draw is kept only if the new mask
keeps every label of the original and stays within the image (its foreground
reaches no image border that the original's did not reach); otherwise the next
draw is tried with a smaller strength, down to the identity, so every sample has
a mask and the manifest records exactly which deformation produced it.
"""
from __future__ import annotations

import numpy as np

MAX_ROTATION_DEG = 15.0
MAX_SCALE_CHANGE = 0.15
MAX_SHIFT_FRACTION = 0.1       # of the image extent, per axis
ELASTIC_GRID_FRACTION = 0.5    # control-point distance, as a fraction of the foreground extent
ELASTIC_ALPHA_FRACTION = 0.06  # displacement s.d. at the control points, same unit
ANISOTROPY_IN_PLANE = 3.0      # above this spacing ratio, rotate only within the fine plane (like nnU-Net)
MAX_ATTEMPTS = 6


def vary_mask(seg: np.ndarray, spacing, seed: int, strength: float = 1.0) -> tuple[np.ndarray, dict]:
    """A deformed copy of the integer mask ``seg`` (*spatial) and the parameters that made it."""
    spacing = np.asarray(spacing, dtype=np.float64)
    if len(spacing) != seg.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {seg.ndim}D mask")
    foreground = np.argwhere(seg != 0)
    if len(foreground) == 0:
        # Nothing to deform: an empty mask stays empty (and says so in the manifest).
        return seg.copy(), {"method": "identity", "reason": "mask has no foreground", "seed": int(seed)}
    centre_mm = foreground.mean(0) * spacing
    extent_mm = (foreground.max(0) - foreground.min(0) + 1) * spacing
    rng = np.random.default_rng(seed)
    for attempt in range(MAX_ATTEMPTS):
        scaled = strength * (1.0 - attempt / (MAX_ATTEMPTS - 1))
        params = _draw(rng, seg.shape, spacing, extent_mm, scaled)
        out = _apply(seg, spacing, centre_mm, params)
        if _acceptable(seg, out):
            return out, {"method": "affine+elastic", "seed": int(seed), "attempt": attempt,
                         "strength": round(scaled, 6), "centre_mm": _floats(centre_mm),
                         **{k: _floats(v) for k, v in params.items() if k != "elastic_field_mm"}}
    raise AssertionError("the last attempt is the identity and is always acceptable")


def _draw(rng: np.random.Generator, shape, spacing, extent_mm, strength: float) -> dict:
    ndim = len(shape)
    anisotropic = ndim == 3 and spacing.max() / spacing.min() > ANISOTROPY_IN_PLANE
    n_angles = 1 if ndim == 2 or anisotropic else 3
    angles = rng.uniform(-1, 1, n_angles) * MAX_ROTATION_DEG * strength
    scale = 1.0 + rng.uniform(-1, 1, ndim) * MAX_SCALE_CHANGE * strength
    shift = rng.uniform(-1, 1, ndim) * MAX_SHIFT_FRACTION * strength * np.asarray(shape) * spacing
    grid_mm = max(ELASTIC_GRID_FRACTION * float(extent_mm.mean()), float(spacing.max()))
    alpha_mm = ELASTIC_ALPHA_FRACTION * float(extent_mm.mean()) * strength
    coarse = tuple(max(2, int(np.ceil(s * sp / grid_mm)) + 1) for s, sp in zip(shape, spacing))
    field = rng.normal(size=(ndim,) + coarse) * alpha_mm
    return {"rotation_deg": angles, "scale": scale, "translation_mm": shift,
            "elastic_grid_mm": grid_mm, "elastic_alpha_mm": alpha_mm, "elastic_field_mm": field}


def _rotation(angles_deg: np.ndarray, ndim: int) -> np.ndarray:
    if ndim == 2 or len(angles_deg) == 1:
        a = np.deg2rad(angles_deg[0])
        plane = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        if ndim == 2:
            return plane
        rot = np.eye(3)
        rot[1:, 1:] = plane  # in-plane only: axes 1 and 2 are the fine ones in nnU-Net order
        return rot
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()


def _apply(seg: np.ndarray, spacing: np.ndarray, centre_mm: np.ndarray, params: dict) -> np.ndarray:
    from scipy.ndimage import map_coordinates, zoom

    ndim = seg.ndim
    # Pull-back map: output point x samples the input at centre + R S^-1 (x - centre - t) + d(x).
    inverse = _rotation(params["rotation_deg"], ndim) @ np.diag(1.0 / params["scale"])
    points_mm = np.indices(seg.shape, dtype=np.float32).reshape(ndim, -1) * spacing[:, None]
    offset = points_mm - (centre_mm + params["translation_mm"])[:, None]
    source_mm = inverse @ offset + centre_mm[:, None]
    field = params["elastic_field_mm"]
    for axis in range(ndim):
        factors = np.asarray(seg.shape) / np.asarray(field.shape[1:])
        smooth = zoom(field[axis], factors, order=1, mode="nearest", grid_mode=True)
        source_mm[axis] += smooth.reshape(-1)
    source_voxels = source_mm / spacing[:, None]
    # Nearest neighbour keeps label values exact; outside the image is background.
    out = map_coordinates(seg, source_voxels, order=0, mode="constant", cval=0)
    return out.reshape(seg.shape).astype(seg.dtype, copy=False)


def _touches(mask: np.ndarray) -> set[tuple[int, int]]:
    faces = set()
    for axis in range(mask.ndim):
        for side, index in ((0, 0), (1, -1)):
            if np.take(mask, index, axis=axis).any():
                faces.add((axis, side))
    return faces


def _acceptable(original: np.ndarray, deformed: np.ndarray) -> bool:
    if not set(np.unique(original)) <= set(np.unique(deformed)):
        return False
    return _touches(deformed != 0) <= _touches(original != 0)


def _floats(value):
    if np.ndim(value) == 0:
        return round(float(value), 6)
    return [round(float(v), 6) for v in np.asarray(value).ravel()]
