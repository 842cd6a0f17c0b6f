"""Per-case, per-label segmentation metrics in physical units.

Every function here is pure: arrays and a spacing in, numbers out. Definitions:

- ``Dice``, ``IoU``, ``TP``/``FP``/``FN``/``TN``, ``n_pred``, ``n_ref``: exactly
  nnU-Net's ``summary.json`` (``compute_tp_fp_fn_tn`` is nnU-Net's own).
- ``Precision`` = TP / (TP + FP), ``Recall`` = TP / (TP + FN).
- Surfaces: a mask minus its binary erosion with connectivity 1 (the face
  neighbours); voxels outside the image count as background, so a mask that
  touches the image border has a surface there.
- ``HD95``: the larger of the two directed 95th percentiles of the surface
  distances (MONAI's ``compute_hausdorff_distance(percentile=95)``).
- ``HD95_pooled``: the 95th percentile of both directions pooled (medpy's
  ``hd95``).
- ``ASSD``: the mean of both directions pooled (MONAI's
  ``compute_average_surface_distance(symmetric=True)`` and medpy's ``assd``).
Percentiles interpolate linearly (numpy's default, as MONAI and medpy do).

Edge cases:

- Axes of length 1 are squeezed away before anything else. nnU-Net's 2D
  readers return ``(1, H, W)`` with a dummy spacing of 999 on that axis, and
  an erosion along an axis of length 1 would erase the whole mask.
- Both masks empty: every metric is NaN (``n_pred`` = ``n_ref`` = 0). The case
  still counts; the means use nanmean and report how many values were valid.
- Exactly one mask empty: Dice = IoU = 0; HD95, HD95_pooled and ASSD are the
  image diagonal in mm (the largest distance the image can hold), and the flag
  ``empty_pred`` or ``empty_ref`` is set. Precision is NaN when the prediction
  is empty (nothing predicted), Recall is NaN when the reference is empty.
- Ignore label: voxels where the reference holds the ignore label are removed
  from both masks before anything is counted or any surface is extracted.

Speed: both masks are cropped to the bounding box of their union (plus one
voxel, so that the erosion sees background around the mask), and the two
directed nearest-surface distances are computed once and shared by all surface
metrics. Two exact methods give the same distances (to float rounding):

- ``"edt"``: one ``scipy.ndimage.distance_transform_edt`` (``sampling=spacing``)
  per surface over the crop; its cost grows with the crop's volume;
- ``"kdtree"``: one ``scipy.spatial.cKDTree`` per surface over the surface
  voxels' coordinates in mm; its cost grows with the number of surface voxels.
``"auto"`` (the default) uses the dense transform only when the surfaces fill
the crop densely (fewer than ``DENSE_CROP_RATIO`` crop voxels per surface
voxel). In our measurements (benchmarks/bench_surface_metrics.py, figures in
docs/evaluation.md) the tree was already faster at 16 crop voxels per surface
voxel, for 2D lesions and 3D organs alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn

SURFACE_METRICS = ("HD95", "HD95_pooled", "ASSD")
OVERLAP_METRICS = ("Dice", "IoU", "Precision", "Recall")
COUNT_KEYS = ("TP", "FP", "FN", "TN", "n_pred", "n_ref")
FLAG_KEYS = ("empty_pred", "empty_ref")
# Metrics that are averaged over cases (counts and flags are summed instead).
MEAN_METRICS = OVERLAP_METRICS + SURFACE_METRICS


@dataclass
class SurfaceDistances:
    """Distances (mm) from every surface voxel of one mask to the other mask's surface."""

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray


def squeeze_dummy_axes(array: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Drop axes of length 1 (and their spacing); see the module docstring for why."""
    spacing = np.asarray(spacing, dtype=np.float64)
    if len(spacing) != array.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match an array of shape {array.shape}")
    keep = [i for i, n in enumerate(array.shape) if n > 1]
    return array.reshape([array.shape[i] for i in keep]), spacing[keep]


def image_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the image's diagonal: the distance given when one mask is empty."""
    return float(np.sqrt(np.sum((np.asarray(shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)) ** 2)))


def _union_crop(a: np.ndarray, b: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    union = a | b
    box = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        hit = np.flatnonzero(union.any(axis=other))
        box.append(slice(max(hit[0] - margin, 0), min(hit[-1] + 1 + margin, union.shape[axis])))
    return tuple(box)


def surface(mask: np.ndarray) -> np.ndarray:
    """The mask minus its erosion with connectivity 1 (outside the array counts as background)."""
    return mask & ~ndimage.binary_erosion(mask)


def _distances_to(target_surface: np.ndarray, query_surface: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    # The feature transform gives, for every voxel, the index of the nearest
    # target voxel; the distance is needed only at the query voxels, so it is
    # computed there instead of over the whole crop.
    nearest = ndimage.distance_transform_edt(~target_surface, sampling=spacing,
                                             return_distances=False, return_indices=True)
    query = np.nonzero(query_surface)
    offset = (nearest[(slice(None),) + query] - np.stack(query)).astype(np.float64)
    offset *= spacing[:, None]
    return np.sqrt(np.einsum("ij,ij->j", offset, offset))


def _distances_kdtree(pred_surface: np.ndarray, ref_surface: np.ndarray, spacing: np.ndarray) -> SurfaceDistances:
    from scipy.spatial import cKDTree

    pred_mm = np.argwhere(pred_surface) * spacing
    ref_mm = np.argwhere(ref_surface) * spacing
    return SurfaceDistances(pred_to_ref=cKDTree(ref_mm).query(pred_mm)[0],
                            ref_to_pred=cKDTree(pred_mm).query(ref_mm)[0])


DENSE_CROP_RATIO = 10


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                      method: str = "auto") -> SurfaceDistances:
    """Surface distances in mm between two non-empty boolean masks of the same shape.

    ``spacing`` is per axis of the arrays, in the same order. Dummy axes must
    already be squeezed (``squeeze_dummy_axes``). ``method``: "auto", "edt" or
    "kdtree" (see the module docstring; all give the same distances).
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    if method not in ("auto", "edt", "kdtree"):
        raise ValueError(f"method must be 'auto', 'edt' or 'kdtree', not {method!r}")
    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks; see case_metrics for the empty cases")
    box = _union_crop(pred, ref)
    pred_surface, ref_surface = surface(pred[box]), surface(ref[box])
    if method == "auto":
        n_surface = int(pred_surface.sum()) + int(ref_surface.sum())
        method = "edt" if pred_surface.size < DENSE_CROP_RATIO * n_surface else "kdtree"
    if method == "kdtree":
        return _distances_kdtree(pred_surface, ref_surface, spacing)
    return SurfaceDistances(pred_to_ref=_distances_to(ref_surface, pred_surface, spacing),
                            ref_to_pred=_distances_to(pred_surface, ref_surface, spacing))


def hd95(d: SurfaceDistances) -> float:
    """MONAI's HD95: the larger of the two directed 95th percentiles."""
    return float(max(np.percentile(d.pred_to_ref, 95), np.percentile(d.ref_to_pred, 95)))


def hd95_pooled(d: SurfaceDistances) -> float:
    """medpy's hd95: the 95th percentile of both directions pooled."""
    return float(np.percentile(np.concatenate([d.pred_to_ref, d.ref_to_pred]), 95))


def assd(d: SurfaceDistances) -> float:
    """Average symmetric surface distance, pooled over both surfaces."""
    return float(np.concatenate([d.pred_to_ref, d.ref_to_pred]).mean())


def _ratio(num: int, den: int) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float],
                   ignore: np.ndarray | None = None) -> dict:
    """All metrics for one pair of boolean masks (one label or region of one case).

    ``spacing`` has one entry per array axis; axes of length 1 are squeezed
    here. ``ignore`` marks voxels to leave out (the reference's ignore label).
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    pred, spacing_sq = squeeze_dummy_axes(np.asarray(pred, dtype=bool), spacing)
    ref, _ = squeeze_dummy_axes(np.asarray(ref, dtype=bool), spacing)
    if ignore is not None:
        ignore, _ = squeeze_dummy_axes(np.asarray(ignore, dtype=bool), spacing)
        pred, ref = pred & ~ignore, ref & ~ignore
    tp, fp, fn, tn = (int(v) for v in compute_tp_fp_fn_tn(ref, pred, ignore))
    result = {"TP": tp, "FP": fp, "FN": fn, "TN": tn, "n_pred": tp + fp, "n_ref": tp + fn,
              "empty_pred": tp + fp == 0, "empty_ref": tp + fn == 0}
    if tp + fp + fn == 0:
        result.update({k: float("nan") for k in MEAN_METRICS})
        return result
    result["Dice"] = 2 * tp / (2 * tp + fp + fn)
    result["IoU"] = tp / (tp + fp + fn)
    result["Precision"] = _ratio(tp, tp + fp)
    result["Recall"] = _ratio(tp, tp + fn)
    if result["empty_pred"] or result["empty_ref"]:
        worst = image_diagonal(ref.shape, spacing_sq)
        result.update({k: worst for k in SURFACE_METRICS})
        return result
    d = surface_distances(pred, ref, spacing_sq)
    result.update({"HD95": hd95(d), "HD95_pooled": hd95_pooled(d), "ASSD": assd(d)})
    return result


def _region_mask(seg: np.ndarray, label_or_region: int | Sequence[int]) -> np.ndarray:
    if np.isscalar(label_or_region):
        return seg == label_or_region
    return np.isin(seg, list(label_or_region))


def case_metrics(pred_seg: np.ndarray, ref_seg: np.ndarray, spacing: Sequence[float],
                 labels_or_regions: Sequence[int | Sequence[int]], ignore_label: int | None = None) -> dict:
    """Metrics per label (or region) of one case, keyed like nnU-Net's summary.json."""
    ignore = ref_seg == ignore_label if ignore_label is not None else None
    return {r: binary_metrics(_region_mask(pred_seg, r), _region_mask(ref_seg, r), spacing, ignore)
            for r in labels_or_regions}
