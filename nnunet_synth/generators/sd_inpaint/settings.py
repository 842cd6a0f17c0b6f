"""Settings of ``sd-inpaint``: Stable Diffusion 1.x fine-tuned on lesion crops, then used to inpaint new lesions.

Stdlib only, so the command layer can build ``--help`` without torch. A field
left at ``None`` at generate time takes the value stored with the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nnunet_synth.generators.sd.settings import SAMPLERS, SDFitOptions
from nnunet_synth.generators.sd.settings import option as _option

DEFAULT_PROMPT = "thyroid nodule, ultrasound"
MIN_WINDOW_PX = 64  # the smallest crop / inpainting window in source pixels (capped by the image size)


@dataclass(frozen=True)
class SDInpaintFitOptions(SDFitOptions):
    """What a user chooses for ``nnunet-synth fit sd-inpaint`` (the shared SD options, then these)."""

    prompt: str = field(default=DEFAULT_PROMPT, metadata=_option(
        "the domain prompt every training crop is captioned with", metavar="TEXT"))
    label: int = field(default=1, metadata=_option(
        "the lesion label whose components are cropped for training and inserted at generation", metavar="L"))
    context: float = field(default=2.5, metadata=_option(
        "side of a crop as a multiple of its lesion's larger bounding-box side (the lesion with its surroundings)",
        metavar="F"))
    mask_dilation: int = field(default=4, metadata=_option(
        "9-channel UNets: the repainted region is the lesion dilated by this many pixels at model resolution",
        metavar="PX"))


@dataclass(frozen=True)
class SDInpaintGenerateOptions:
    """What a user chooses for ``nnunet-synth generate sd-inpaint`` (``None``: the model's stored value)."""

    steps: int = field(default=50, metadata=_option("denoising steps", metavar="N"))
    scheduler: str = field(default="ddim", metadata=_option(
        "sampler, built from the model's training schedule: DDIMScheduler, PNDMScheduler or "
        "DPMSolverMultistepScheduler", choices=SAMPLERS))
    guidance_scale: float = field(default=7.5, metadata=_option(
        "classifier-free guidance scale (1 disables the unconditional pass)", metavar="G"))
    negative_prompt: str = field(default="", metadata=_option("negative prompt for guidance", metavar="TEXT"))
    resolution: int | None = field(default=None, metadata=_option(
        "side of the inpainted window in pixels (default: the model's training resolution)", metavar="R"))
    context: float | None = field(default=None, metadata=_option(
        "window side as a multiple of the new lesion's larger side (default: the model's training context)",
        metavar="F"))
    mask_dilation: int | None = field(default=None, metadata=_option(
        "the repainted region is the new lesion dilated by this many pixels at model resolution "
        "(default: the model's)", metavar="PX"))
    region_label: int | None = field(default=None, metadata=_option(
        "a label of the dataset that marks where lesions may go (default: the imaged region found from the "
        "image: the non-black ultrasound sector)", metavar="L"))
    border_margin_mm: float | None = field(default=None, metadata=_option(
        "distance a new lesion keeps from the border of the allowed region, in mm (default: the placement "
        "rule's, see docs/lesion_placement.md)", metavar="MM"))
    lesion_margin_mm: float | None = field(default=None, metadata=_option(
        "distance a new lesion keeps from existing lesions, in mm (default: the placement rule's)", metavar="MM"))
    pretrained: str | None = field(default=None, metadata=_option(
        "the Stable Diffusion folder for the VAE, text encoder and tokenizer (default: the one the model was "
        "fine-tuned from, as recorded in its config.json)", metavar="SD_DIR"))
    half: bool = field(default=False, metadata=_option("run the pipeline in fp16 (GPU only)"))
