"""Settings of ``meddiff-ft`` (MedDiff-FT): masked fine-tuning, guided-mask synthesis, a mask DDPM,
a background model, a DINOv2 quality filter and mask erosion.

Stdlib only, so the command layer can build ``--help`` without torch. A generate
field left at ``None`` takes the value stored with the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nnunet_synth.generators.sd.settings import SAMPLERS, SDFitOptions
from nnunet_synth.generators.sd.settings import option as _option

DEFAULT_PROMPT = "a photo of hta"
DEFAULT_BACKGROUND_PROMPT = "a photo of htb"
MASK_CHANNELS = (64, 128, 256, 512)


@dataclass(frozen=True)
class MedDiffFTFitOptions(SDFitOptions):
    """``nnunet-synth fit meddiff-ft``: the shared SD options (with the paper's recipe as defaults), then these."""

    # The paper's recipe: lr 3e-6, 500 steps, effective batch 2, 512 px.
    train_steps: int = field(default=500, metadata=_option(
        "lesion fine-tune: total optimisation steps; rerunning with a larger value continues training", metavar="N"))
    gradient_accumulation_steps: int = field(default=2, metadata=_option(
        "micro-batches whose gradients are summed before each update (effective batch = batch x this x "
        "processes; the paper's is 2)", metavar="N"))
    learning_rate: float = field(default=3e-6, metadata=_option("AdamW learning rate", flag="--lr", metavar="F"))
    prompt: str = field(default=DEFAULT_PROMPT, metadata=_option(
        "the trigger-word prompt of the lesion fine-tune", metavar="TEXT"))
    label: int = field(default=1, metadata=_option("the lesion label", metavar="L"))
    context: float = field(default=2.5, metadata=_option(
        "side of a training crop / synthesis window as a multiple of its lesion's larger side", metavar="F"))
    outside_weight: float = field(default=0.0, metadata=_option(
        "loss weight outside the lesion (at latent resolution): 0 = the lesion only, 1 = plain MSE", metavar="W"))
    lesion_model: str | None = field(default=None, metadata=_option(
        "a ready fine-tuned 9-channel UNet folder (diffusers layout) to use instead of training one", metavar="DIR"))
    # part 3: the mask generator
    mask_steps: int = field(default=2000, metadata=_option("mask DDPM: training steps", metavar="N"))
    mask_resolution: int = field(default=64, metadata=_option(
        "mask DDPM: side of the square mask canvas in pixels", metavar="R"))
    mask_channels: tuple[int, ...] = field(default=MASK_CHANNELS, metadata=_option(
        "mask DDPM: UNet channels per level", metavar="C"))
    mask_batch_size: int = field(default=8, metadata=_option("mask DDPM: masks per step", metavar="N"))
    mask_lr: float = field(default=1e-4, metadata=_option("mask DDPM: AdamW learning rate", metavar="F"))
    mask_model: str | None = field(default=None, metadata=_option(
        "a ready mask-DDPM folder (the mask/ folder of another meddiff-ft model) instead of training one",
        metavar="DIR"))
    no_mask_model: bool = field(default=False, metadata=_option(
        "skip the mask DDPM: new lesion shapes are then deformed training shapes (the lesion bank)"))
    # part 4: the background (non-lesion) model
    background_steps: int = field(default=500, metadata=_option(
        "background fine-tune (inverted masks): training steps", metavar="N"))
    background_prompt: str = field(default=DEFAULT_BACKGROUND_PROMPT, metadata=_option(
        "the prompt of the background fine-tune", metavar="TEXT"))
    background_model: str | None = field(default=None, metadata=_option(
        "a ready background UNet folder (diffusers layout, 9 channels) instead of training one", metavar="DIR"))
    no_background_model: bool = field(default=False, metadata=_option(
        "skip the background model (generate then needs label-free cases or --backgrounds)"))


@dataclass(frozen=True)
class MedDiffFTGenerateOptions:
    """``nnunet-synth generate meddiff-ft --mode new`` (``None``: the model's stored value)."""

    steps: int = field(default=50, metadata=_option("denoising steps", metavar="N"))
    scheduler: str = field(default="ddim", metadata=_option(
        "sampler built from the model's training schedule (RePaint jumps need ddim)", choices=SAMPLERS))
    guidance_scale: float = field(default=7.5, metadata=_option(
        "classifier-free guidance scale (1 disables the unconditional pass)", metavar="G"))
    negative_prompt: str = field(default="", metadata=_option("negative prompt for guidance", metavar="TEXT"))
    resolution: int | None = field(default=None, metadata=_option(
        "side of the synthesis window in pixels (default: the model's training resolution)", metavar="R"))
    context: float | None = field(default=None, metadata=_option(
        "window side as a multiple of the new lesion's larger side (default: the model's)", metavar="F"))
    # guided-mask synthesis
    mask_dilation_start: int = field(default=2, metadata=_option(
        "dynamic mask: dilation of the blend mask at the first step, in latent pixels (tightened to 0)",
        metavar="PX"))
    tighten_until: float = field(default=0.5, metadata=_option(
        "dynamic mask: fraction of the steps over which the dilation shrinks linearly to 0 (the exact mask after)",
        metavar="F"))
    repaint_jumps: int = field(default=0, metadata=_option(
        "RePaint: resampling jumps per step (0 = off; re-noise x_{t-1} to x_t and denoise again)", metavar="N"))
    repaint_until: float = field(default=0.5, metadata=_option(
        "RePaint: resample during this first fraction of the steps", metavar="F"))
    # mask generation
    mask_sampling_steps: int = field(default=50, metadata=_option(
        "mask DDPM: DDIM sampling steps", metavar="N"))
    mask_tries: int = field(default=5, metadata=_option(
        "mask DDPM: draws before falling back to a lesion-bank shape when none passes the cleaning", metavar="N"))
    min_mask_pixels: int = field(default=16, metadata=_option(
        "cleaning: a generated mask needs at least this many pixels on its canvas", metavar="N"))
    allow_components: bool = field(default=False, metadata=_option(
        "cleaning: keep every component of a generated mask (default: the largest one only)"))
    border_margin_mm: float | None = field(default=None, metadata=_option(
        "distance a new lesion keeps from the border of the imaged region, in mm (default: the placement rule's, "
        "docs/lesion_placement.md)", metavar="MM"))
    # backgrounds
    backgrounds: str | None = field(default=None, metadata=_option(
        "a folder of lesion-free images (files ending as the dataset's, one per channel: NAME_0000.png) used as "
        "backgrounds for source cases with a lesion, instead of restoring them with the background model",
        metavar="DIR"))
    restore_dilation: int = field(default=3, metadata=_option(
        "background restoration: the repaired region is the source's lesion dilated by this many pixels",
        metavar="PX"))
    # quality filter
    filter_model: str | None = field(default=None, metadata=_option(
        "a local DINOv2 folder (transformers Dinov2Model); turns the similarity-band filter on", metavar="DIR"))
    filter_band: tuple[float, ...] | None = field(default=None, metadata=_option(
        "the band [low high] of cosine similarities to the nearest real lesion window that is kept (default: "
        "calibrated from the real-to-real similarities)", metavar="S"))
    filter_percentiles: tuple[float, ...] = field(default=(5.0, 95.0), metadata=_option(
        "percentiles of the real-to-real similarities that calibrate the band", metavar="P"))
    # mask erosion
    erosion_px: int = field(default=1, metadata=_option(
        "erode the final lesion mask by a disc of this radius in pixels (0 = off)", metavar="PX"))
    erosion_mm: float | None = field(default=None, metadata=_option(
        "erode by this radius in mm instead (through the case spacing)", metavar="MM"))
    pretrained: str | None = field(default=None, metadata=_option(
        "the Stable Diffusion folder for the VAE, text encoder and tokenizer (default: the one recorded in the "
        "model's config.json)", metavar="SD_DIR"))
    half: bool = field(default=False, metadata=_option("run the pipelines in fp16 (GPU only)"))


# Settings that may change between a fit and its resumption (the rest must match the folder's config.json).
RESUMABLE_FIT_CHANGES = {"mask_steps", "background_steps"}
