"""Real and twin through one nnU-Net augmentation pipeline.

The loader stacks the twin's channels after the real sample's channels
(``image`` has 2C channels). Spatial transforms (SpatialTransform, mirroring,
the pseudo-2D conversions) treat all channels alike, so real and twin get
exactly the same rotation, scaling, elastic deformation and mirroring.
Transforms that only change intensities (every ``ImageOnlyTransform``, and
``MaskImageTransform``) are wrapped in ``PerHalfTransform``: they run once
on each half, with independent random draws by default, or with the same
draws (the random state is replayed) when synchronized. ``SplitTwinTransform``
ends the pipeline by moving the twin half to the ``twin`` key.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.random import OneOfTransform, RandomTransform



def _random_state():
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _set_random_state(state) -> None:
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


class PerHalfTransform(BasicTransform):
    """Apply an intensity transform to the real half and to the twin half separately."""

    def __init__(self, transform: BasicTransform, synchronize: bool = False):
        super().__init__()
        self.transform = transform
        self.synchronize = synchronize

    def apply(self, data_dict, **params):
        image = data_dict["image"]
        half = image.shape[0] // 2
        state = _random_state() if self.synchronize else None
        parts = (image[:half], image[half:])
        outputs = []
        for part in parts:
            if state is not None and outputs:
                # Same draws for the twin as for the real half: identical parameters and noise.
                _set_random_state(state)
            outputs.append(self.transform(**{**data_dict, "image": part})["image"])
        if not all(out is part for out, part in zip(outputs, parts)):
            # Skipped or in-place transforms return their input view: no copy needed then.
            data_dict["image"] = torch.cat(outputs)
        return data_dict

    def __repr__(self):
        return f"{type(self).__name__}(synchronize={self.synchronize}, transform={self.transform!r})"


class SplitTwinTransform(BasicTransform):
    """Move the second half of the channels of ``image`` to ``twin``."""

    def apply(self, data_dict, **params):
        image = data_dict["image"]
        half = image.shape[0] // 2
        data_dict["image"], data_dict["twin"] = image[:half], image[half:]
        return data_dict


def _intensity_only(t: BasicTransform) -> bool:
    if isinstance(t, (ImageOnlyTransform, MaskImageTransform)):
        return True
    if isinstance(t, RandomTransform):
        return _intensity_only(t.transform)
    if isinstance(t, OneOfTransform):
        return all(_intensity_only(i) for i in t.list_of_transforms)
    if isinstance(t, ComposeTransforms):
        return all(_intensity_only(i) for i in t.transforms)
    return False


def _rewrite(t: BasicTransform, synchronize: bool) -> BasicTransform:
    if _intensity_only(t):
        return PerHalfTransform(t, synchronize)
    if isinstance(t, ComposeTransforms):
        return ComposeTransforms([_rewrite(i, synchronize) for i in t.transforms])
    return t


def twin_pipeline(pipeline: BasicTransform, synchronize_intensity: bool = False,
                  extra: list[BasicTransform] | None = None) -> ComposeTransforms:
    """nnU-Net's augmentation ``pipeline`` made twin-aware, then ``extra`` (e.g. the mask), then the split.

    The input sample has 2C image channels (real, then twin). The output has
    ``image`` (C), ``twin`` (C), ``segmentation`` and whatever ``extra`` adds.
    """
    return ComposeTransforms([_rewrite(pipeline, synchronize_intensity), *(extra or []), SplitTwinTransform()])
