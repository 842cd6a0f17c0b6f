"""Intensities between the raw dataset and a generator.

On the way in every channel is clipped at its 0.5 and 99.5 percentiles and
scaled to [-1, 1], so generators see the same range for ultrasound, CT and MRI.
On the way out a generated channel is quantile-mapped onto the source case's own
intensities (histogram matching), so a synthetic CT keeps its Hounsfield units
and a synthetic ultrasound its grey levels.
"""
from __future__ import annotations

import numpy as np

CLIP_PERCENTILES = (0.5, 99.5)


def normalise_image(image: np.ndarray) -> np.ndarray:
    """float32 (C, *spatial) in [-1, 1], each channel clipped and scaled on its own."""
    out = np.empty(image.shape, dtype=np.float32)
    for c, channel in enumerate(image):
        lo, hi = np.percentile(channel, CLIP_PERCENTILES)
        if hi <= lo:
            # A constant channel carries no contrast; the middle of the range is its only honest value.
            out[c] = 0.0
            continue
        out[c] = 2.0 * (np.clip(channel, lo, hi) - lo) / (hi - lo) - 1.0
    return out


def to_source_intensities(generated: np.ndarray, source_image: np.ndarray) -> np.ndarray:
    """Map generated channels (in [-1, 1]) onto the source case's intensity distribution.

    Both arrays are (C, *spatial); their spatial shapes may differ. The result is
    float64; ``raw_dataset.write_case`` rounds and casts it to the source's dtype.
    """
    from skimage.exposure import match_histograms

    if generated.shape[0] != source_image.shape[0]:
        raise ValueError(f"generated image has {generated.shape[0]} channels, the source {source_image.shape[0]}")
    return match_histograms(generated.astype(np.float64), source_image.astype(np.float64), channel_axis=0)


def denormalise(normalised: np.ndarray, source_image: np.ndarray) -> np.ndarray:
    """The inverse of ``normalise_image`` for ``source_image``: [-1, 1] back to its raw intensity scale.

    For inpainting, where a generator repaints part of the source's own
    normalised image: the painted voxels go back onto the source's scale
    linearly, so they sit among the untouched raw voxels around them.
    """
    out = np.empty(normalised.shape, dtype=np.float64)
    for c, (channel, source) in enumerate(zip(normalised, source_image)):
        lo, hi = np.percentile(source, CLIP_PERCENTILES)
        out[c] = lo + (channel.astype(np.float64) + 1.0) * 0.5 * (hi - lo)
    return out
