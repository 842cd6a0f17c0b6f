"""The DiffBoost mixing mask: a coarse random grid, thresholded, upsampled by nearest neighbour.

For a patch of shape ``(s_1, ..., s_n)`` and patch edge ``r = (r_1, ..., r_n)``,
a grid of ``ceil(s_i / r_i)`` uniform values in [0, 1) is drawn per sample.
Cells whose value is below ``alpha`` become 1 ("keep the real sample"), the
others 0 ("take the twin"). Each cell is then repeated to ``r_i`` voxels and
the result cropped to the patch. Hence ``P(real) = alpha`` for every voxel,
alpha 0 gives a pure twin and alpha 1 a pure real sample.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform

# DiffBoost mixes 64 px cells in 384 px images: one sixth of the patch edge.
DEFAULT_EDGE_FRACTION = 1 / 6


def default_patch_edge(patch_size: Sequence[int]) -> tuple[int, ...]:
    """One sixth of the patch size per axis (at least one voxel)."""
    return tuple(max(1, round(int(s) * DEFAULT_EDGE_FRACTION)) for s in patch_size)


def resolve_patch_edge(patch_edge: int | Sequence[int] | None, patch_size: Sequence[int]) -> tuple[int, ...]:
    """Turn the trainer's ``patch_edge`` setting (None, an int, or one int per axis) into one int per axis."""
    if patch_edge is None:
        return default_patch_edge(patch_size)
    edges = (patch_edge,) * len(patch_size) if isinstance(patch_edge, int) else tuple(patch_edge)
    if len(edges) != len(patch_size) or any(int(e) != e or e < 1 for e in edges):
        raise ValueError(f"patch_edge must be a positive int or {len(patch_size)} positive ints, got {patch_edge!r}")
    return tuple(int(e) for e in edges)


def draw_mix_mask(patch_size: Sequence[int], alpha: float, patch_edge: Sequence[int],
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One boolean mask of shape ``(1, *patch_size)``; True keeps the real sample."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    grid_shape = [math.ceil(s / r) for s, r in zip(patch_size, patch_edge)]
    mask = torch.rand(grid_shape, generator=generator) < alpha
    for axis, r in enumerate(patch_edge):
        mask = mask.repeat_interleave(r, dim=axis)
    crop = tuple(slice(0, s) for s in patch_size)
    return mask[crop][None].contiguous()


class PatchMixMaskTransform(BasicTransform):
    """Adds ``mix_mask`` (bool, ``(1, *spatial)`` of the image) to a sample."""

    def __init__(self, alpha: float, patch_edge: Sequence[int]):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.patch_edge = tuple(int(e) for e in patch_edge)

    def apply(self, data_dict, **params):
        spatial = data_dict["image"].shape[1:]
        if len(spatial) != len(self.patch_edge):
            raise ValueError(f"patch_edge {self.patch_edge} has {len(self.patch_edge)} axes, "
                             f"the sample has {len(spatial)} spatial axes")
        data_dict["mix_mask"] = draw_mix_mask(spatial, self.alpha, self.patch_edge)
        return data_dict
