"""Real cases as generators see them: true 2D or 3D arrays with their spacing.

nnU-Net's readers return 2D images as 3D arrays with a leading axis of length 1
and a dummy spacing of 999 (or 999 times the in-plane spacing). Generators see
true 2D arrays (C, H, W) with the in-plane spacing; the leading axis is put back
before writing, so written files have exactly the source's geometry.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import TrainingCase
from nnunet_synth.generators.intensity import normalise_image

_DUMMY_2D_SPACING = 999


@dataclass
class SourceCase:
    case_id: str
    image: np.ndarray            # float32 (C, *spatial), the raw intensities
    seg: np.ndarray              # int32 (*spatial)
    spacing: tuple[float, ...]   # per spatial axis of ``image``
    properties: dict             # the reader's, for writing with the same geometry
    is_2d: bool

    def restore_layout(self, array: np.ndarray) -> np.ndarray:
        """Put back the length-1 axis nnU-Net's 2D readers and writers use (channel axis first)."""
        return array[:, None] if self.is_2d else array

    @cached_property
    def normalised(self) -> TrainingCase:
        """The case in generator space: every channel clipped and scaled to [-1, 1] (computed once per case,
        however many samples are drawn from it)."""
        return TrainingCase(self.case_id, normalise_image(self.image), self.seg, self.spacing)


def read_source_case(real, case_id: str) -> SourceCase:
    images, seg, properties = real.read_case(case_id)
    spacing = tuple(float(s) for s in properties["spacing"])
    # NaturalImage2DIO sets the dummy spacing to 999, SimpleITKIO to 999 times the
    # largest in-plane spacing (2D NIfTI); either way it dwarfs the real spacings.
    is_2d = images.shape[1] == 1 and spacing[0] >= _DUMMY_2D_SPACING * max(spacing[1:]) * (1 - 1e-6)
    if is_2d:
        images, seg, spacing = images[:, 0], seg[:, 0], spacing[1:]
    return SourceCase(case_id, images.astype(np.float32, copy=False), np.rint(seg[0]).astype(np.int32),
                      spacing, properties, is_2d)


def check_case_ids(real, requested: list[str], option: str) -> list[str]:
    known = set(real.case_ids())
    unknown = [c for c in requested if c not in known]
    if unknown:
        raise SynthError(f"{option}: case(s) {', '.join(unknown[:5])} are not in {real.folder}")
    if len(set(requested)) != len(requested):
        raise SynthError(f"{option}: a case is listed twice")
    return list(requested)
