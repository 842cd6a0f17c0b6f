"""The interface every generator implements (v2): source case in, pair out.

The framework (``nnunet_synth.generators.fit`` / ``.generate``, behind
``nnunet-synth fit`` / ``generate``) owns everything that is the same for all
generators: reading the real raw dataset, choosing the training cases of a
fold, intensity normalisation on the way in and the mapping back to the
source's intensities and data type on the way out, mask variation for ``new``,
seeds, resume, sharding, writing files and the ``synthesis.json`` manifest.

A generator only does two things:

* ``fit(cases, labels, model_dir, settings)``: training cases -> a model folder;
* ``generate(request) -> response``: a source case, a target mask, a seed and
  a prompt -> an image, the final mask and per-case extras for the manifest.

Settings are dataclasses declared by the generator (``fit_settings`` and
``generate_settings``): the defaults are written once, in the fields; the
command layer derives the options and their help texts from the fields (the
``help`` and, where the option name differs from the field name, ``flag`` keys
of each field's metadata). A generator never sees the command line.

Intensity convention: every image channel is in [-1, 1] (the framework clips
each case at its 0.5 and 99.5 percentiles and scales); generators return
images in that range.

Modes (``supported_modes`` declares which a generator does):

* ``twins``: a new image for the source's own mask; the final mask is that mask;
* ``new``: a new image for the target mask, which the framework varied from the
  source mask; the final mask is the target mask (a generator with
  ``draws_masks`` draws its own new mask instead and returns it);
* ``inpaint``: a new lesion placed into the source image; the final mask is
  the source mask plus the inserted lesion, and ``changed`` marks the voxels
  the generator painted (everything else keeps the source's intensities).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

MODES = ("twins", "new", "inpaint")
# The manifest's word for what a mode produces (case id tags: syn, new, inp).
KIND_OF_MODE = {"twins": "twin", "new": "new", "inpaint": "inpaint"}


@dataclass(frozen=True)
class NoSettings:
    """For a generator without options of its own."""


@dataclass
class TrainingCase:
    case_id: str
    image: np.ndarray      # float32, (C, *spatial), each channel in [-1, 1]
    seg: np.ndarray        # integer labels, (*spatial)
    spacing: tuple[float, ...]  # per spatial axis, nnU-Net order


@dataclass(frozen=True)
class GenerationRequest:
    source: TrainingCase       # the real case the sample derives from (image in [-1, 1])
    target_mask: np.ndarray    # twins and inpaint: the source mask; new: the varied mask
    mode: str                  # one of MODES
    seed: int                  # determines the sample fully
    prompt: str | None         # None for generators that take no text
    settings: object           # the generator's generate_settings instance


@dataclass
class GenerationResponse:
    image: np.ndarray                # float32 (C, *target_mask.shape), in [-1, 1]
    mask: np.ndarray                 # the final label map of the pair
    extras: dict = field(default_factory=dict)  # JSON-friendly, recorded per case in synthesis.json
    prompt: str | None = None        # the prompt actually used, when the generator rewrote the request's
    changed: np.ndarray | None = None  # inpaint: bool (*spatial), the voxels the generator painted
    kept: bool = True                # False: the generator's own quality check dropped the pair (recorded as `kept`)


class Generator:
    """Base class. Subclasses are registered by ``name`` in nnunet_synth.generators.registry."""

    name: ClassVar[str] = ""
    #: Recorded in synthesis.json; empty means the nnunet_synth version.
    version: ClassVar[str] = ""
    supported_modes: ClassVar[tuple[str, ...]] = ("twins",)
    #: Whether ``request.prompt`` means anything to this generator (``--prompt`` is refused otherwise).
    uses_prompt: ClassVar[bool] = False
    #: ``new`` mode: the generator draws the new masks itself (the framework's varied target mask is not
    #: used and the response's mask is the final one, not the target mask).
    draws_masks: ClassVar[bool] = False
    fit_settings: ClassVar[type] = NoSettings
    generate_settings: ClassVar[type] = NoSettings

    @classmethod
    def fit(cls, cases: list[TrainingCase], labels: list[int], model_dir: Path, settings) -> None:
        """Train on ``cases`` and save a model folder (Hugging Face layout: config + safetensors).

        ``labels`` are the dataset's label values (background included).
        ``settings`` is a ``fit_settings`` instance. Must be resumable where
        training is long: a rerun with the same model_dir continues.
        """
        raise NotImplementedError

    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu") -> "Generator":
        """Load a saved model folder; a missing or incomplete folder raises SynthError naming it."""
        raise NotImplementedError

    def model_labels(self) -> list[int]:
        """Label values the model was trained with (masks with other labels are refused)."""
        raise NotImplementedError

    def check_settings(self, settings):
        """Validate ``settings`` against the loaded model before anything is written (SynthError if wrong)."""
        return settings

    def generate(self, request: GenerationRequest) -> GenerationResponse:
        """The pair for ``request``, fully determined by ``request.seed``."""
        raise NotImplementedError

    def finish_dataset(self, dataset_folder: Path) -> None:
        """Called once in the main process after the dataset and its manifest are written (e.g. for a report)."""

    def summary(self) -> str | None:
        """One line printed after this process's cases (e.g. time per image, peak GPU memory), or None."""
        return None
