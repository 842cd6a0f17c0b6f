"""Segmentation consistency: does a synthetic image show the lesion its mask claims?

A baseline nnU-Net of the same fold segments the synthetic image; the case's
consistency is the Dice of that prediction against the synthetic mask, the
mean over the foreground labels (or regions). The conventions are those of
targeted generation: a label that is empty in both mask and prediction has
no Dice and is left out of the mean; a case with no Dice for any label has
nothing to get wrong and scores 1.0.

``--filter LOW[:HIGH]`` keeps the cases whose consistency lies in
[LOW, HIGH] (HIGH defaults to 1). Outside the band a case becomes
``kept: false``; a case an earlier gate had already dropped stays dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nnunet_synth.errors import SynthError


@dataclass(frozen=True)
class Band:
    low: float
    high: float = 1.0

    def __post_init__(self):
        for name, value in (("LOW", self.low), ("HIGH", self.high)):
            if not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise SynthError(f"--filter: {name} must be a Dice between 0 and 1, got {value}")
        if self.low > self.high:
            raise SynthError(f"--filter {self.low}:{self.high}: LOW is greater than HIGH")

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def text(self) -> str:
        return f"{self.low:g}:{self.high:g}"


def parse_band(text: str) -> Band:
    """``LOW`` or ``LOW:HIGH`` as a Band."""
    low, sep, high = text.partition(":")
    try:
        return Band(float(low), float(high) if sep else 1.0)
    except ValueError:
        raise SynthError(f"--filter {text}: expected LOW or LOW:HIGH, two numbers between 0 and 1") from None


def _region(seg: np.ndarray, label_or_region) -> np.ndarray:
    if np.isscalar(label_or_region):
        return seg == label_or_region
    return np.isin(seg, list(label_or_region))


def case_consistency(prediction: np.ndarray, mask: np.ndarray, labels_or_regions) -> float:
    """Mean foreground Dice of a prediction against a synthetic mask (1.0 when every label is empty in both)."""
    prediction, mask = np.asarray(prediction), np.asarray(mask)
    if prediction.shape != mask.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from mask shape {mask.shape}")
    dice = []
    for r in labels_or_regions:
        p, m = _region(prediction, r), _region(mask, r)
        denominator = int(p.sum()) + int(m.sum())
        if denominator:
            dice.append(2.0 * int((p & m).sum()) / denominator)
    return float(np.mean(dice)) if dice else 1.0
