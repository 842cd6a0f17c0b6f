"""The one check of label values: integers, and only values that are allowed.

Raw datasets, generators, evaluation and test sets all refuse a label map that
holds a value they do not know. The rule and the wording live here; each caller
says what the file is (``where``) and what to do about it (``hint``).
"""
from __future__ import annotations

import numpy as np

from nnunet_synth.errors import SynthError


def unknown_label_values(seg: np.ndarray, allowed) -> list[int]:
    """Sorted label values of ``seg`` that are not in ``allowed`` (``seg`` must hold integers)."""
    allowed = {int(v) for v in allowed}
    seg = np.asarray(seg)
    if seg.size == 0:
        return []
    low, high = int(np.min(seg)), int(np.max(seg))
    if low >= 0 and high < 1 << 16:
        # counting is linear; np.unique sorts every voxel (slow for large 3D labels)
        present = np.flatnonzero(np.bincount(seg.ravel().astype(np.intp, copy=False), minlength=high + 1))
    else:
        present = np.unique(seg).astype(np.int64)
    return sorted(set(present.tolist()) - allowed)


def check_label_values(seg: np.ndarray, allowed, where: str, allowed_from: str = "", hint: str = "") -> None:
    """Raise a one-line SynthError if ``seg`` holds non-integers or values outside ``allowed``.

    ``where`` names the file or case at fault; ``allowed_from`` says who
    declares the allowed values (e.g. "dataset.json", "the model"); ``hint`` is
    what the user can do about it.
    """
    seg = np.asarray(seg)
    suffix = f"; {hint}" if hint else ""
    if seg.dtype.kind == "f" and seg.size:
        if not np.isfinite(np.min(seg) + np.max(seg)):
            raise SynthError(f"{where}: label values must be integers (found NaN or infinity){suffix}")
        fraction = seg != np.round(seg)
        if fraction.any():
            raise SynthError(f"{where}: label values must be integers (found {seg[fraction][0]:g}){suffix}")
    unknown = unknown_label_values(seg, allowed)
    if unknown:
        source = f" by {allowed_from}" if allowed_from else ""
        raise SynthError(f"{where}: label value(s) {unknown} are not among the values allowed{source} "
                         f"({sorted(int(v) for v in allowed)}){suffix}")
