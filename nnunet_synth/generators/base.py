"""The interface every generator implements, and the data it exchanges with the framework.

The framework (``nnunet-synth fit`` / ``nnunet-synth generate``) owns everything
that is the same for all generators: reading the real raw dataset, choosing the
training cases of a fold, intensity normalisation on the way in and the mapping
back to the source's intensity distribution and data type on the way out, seeds,
resume, sharding, writing files and the ``synthesis.json`` manifest. A generator
only turns training cases into a model folder, and a mask (plus a seed) into an
image.

Intensity convention between framework and generator: every image channel is in
[-1, 1] (the framework clips each case at its 0.5 and 99.5 percentiles and
scales), and generators return images in that range.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class TrainingCase:
    case_id: str
    image: np.ndarray      # float32, (C, *spatial), each channel in [-1, 1]
    seg: np.ndarray        # integer labels, (*spatial)
    spacing: tuple[float, ...]  # per spatial axis, nnU-Net order


class Generator:
    """Base class. Subclasses are registered by ``name`` in nnunet_synth.generators.registry."""

    name: str = ""
    #: ``twin`` (new image for a given mask), ``new`` (new mask and image), or both.
    supported_modes: tuple[str, ...] = ("twins",)

    @classmethod
    def add_fit_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Options of ``nnunet-synth fit NAME`` that belong to this generator."""

    @classmethod
    def add_generate_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Options of ``nnunet-synth generate NAME`` that belong to this generator."""

    @classmethod
    def fit(cls, cases: list[TrainingCase], labels: list[int], model_dir: Path, args: argparse.Namespace) -> None:
        """Train on ``cases`` and save a model folder (Hugging Face layout: config + safetensors).

        ``labels`` are the dataset's label values (background included). Must be
        resumable where training is long: a rerun with the same model_dir continues.
        """
        raise NotImplementedError

    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu") -> "Generator":
        """Load a saved model folder; a missing or incomplete folder raises SynthError naming it."""
        raise NotImplementedError

    def model_labels(self) -> list[int]:
        """Label values the model was trained with (masks with other labels are refused)."""
        raise NotImplementedError

    def generate(self, mask: np.ndarray, spacing: tuple[float, ...], seed: int,
                 args: argparse.Namespace) -> np.ndarray:
        """An image (float32, (C, *mask.shape), in [-1, 1]) for ``mask``, fully determined by ``seed``."""
        raise NotImplementedError
