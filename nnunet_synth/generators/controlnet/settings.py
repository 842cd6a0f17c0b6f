"""Settings of ``controlnet`` (DiffBoost): a ControlNet on a pretrained SD 1.x, conditioned on edges and text.

Stdlib only, so the command layer can build ``--help`` without torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nnunet_synth.generators.sd.settings import SAMPLERS, SDFitOptions
from nnunet_synth.generators.sd.settings import option as _option

EDGES = ("canny", "sobel", "hed")
# Phrases DiffBoost mixes into the sampling prompt; one is drawn per twin.
AUGMENTATIONS = ("enhanced contrast", "high resolution", "sharp details", "soft tissue texture",
                 "clear boundaries", "low noise")
QUALITY_SUFFIX = ", best quality, extremely detailed"
STYLE_PROMPT = "gray, sketch"
# Stable Diffusion's usual negative prompt (as in the ControlNet reference scripts).
NEGATIVE_PROMPT = ("longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, "
                   "worst quality, low quality")


@dataclass(frozen=True)
class ControlNetFitOptions(SDFitOptions):
    """What a user chooses for ``nnunet-synth fit controlnet`` (the shared SD options, then these)."""

    prompt: str | None = field(default=None, metadata=_option(
        "the text every training image is captioned with, e.g. \"Breast, Ultrasound\" (or --prompt-csv)",
        metavar="TEXT"))
    prompt_csv: str | None = field(default=None, metadata=_option(
        "a CSV file with columns case,prompt: one caption per training case (cases it leaves out get --prompt)",
        metavar="FILE"))
    caption_dropout: float = field(default=0.1, metadata=_option(
        "fraction of training images captioned with the empty prompt (classifier-free guidance needs it)",
        metavar="F"))
    edge: str = field(default="canny", metadata=_option(
        "edge detector of the conditioning map (plus the lesion mask's boundary): canny or sobel "
        "(scikit-image, no weights), or hed (controlnet_aux's HED with --hed-model)", choices=EDGES))
    edge_sigma: float = field(default=2.0, metadata=_option(
        "Gaussian smoothing (pixels, at model resolution) before the canny/sobel edge detector", metavar="S"))
    hed_model: str | None = field(default=None, metadata=_option(
        "with --edge hed: a local folder with the HED annotator weights (e.g. lllyasviel/Annotators)",
        metavar="DIR"))
    init_controlnet: str | None = field(default=None, metadata=_option(
        "start from this ControlNet folder (e.g. one pre-trained on other medical data) instead of a copy of "
        "the UNet's encoder", metavar="DIR"))


@dataclass(frozen=True)
class ControlNetGenerateOptions:
    """What a user chooses for ``nnunet-synth generate controlnet`` (``None``: the model's stored value)."""

    steps: int = field(default=20, metadata=_option("denoising steps", metavar="N"))
    scheduler: str = field(default="ddim", metadata=_option(
        "sampler, built from the base model's schedule: DDIMScheduler, PNDMScheduler or DPMSolverMultistepScheduler",
        choices=SAMPLERS))
    guidance_scale: float = field(default=9.0, metadata=_option("classifier-free guidance scale", metavar="G"))
    resolution: int = field(default=384, metadata=_option(
        "side of the square the image is generated at (the image is padded to a square, never stretched)",
        metavar="R"))
    prompt_weight: float = field(default=0.045, metadata=_option(
        "weight of E(prompt + \", best quality, extremely detailed\") in the mixed text embedding", metavar="W"))
    augmentation_weight: float = field(default=0.005, metadata=_option(
        "weight of E(augmentation phrase) in the mixed text embedding", metavar="W"))
    style_weight: float = field(default=0.95, metadata=_option(
        "weight of E(\"gray, sketch\") in the mixed text embedding", metavar="W"))
    augmentations: tuple[str, ...] = field(default=AUGMENTATIONS, metadata=_option(
        "phrases one of which is drawn per twin", metavar="PHRASE"))
    negative_prompt: str = field(default=NEGATIVE_PROMPT, metadata=_option("negative prompt", metavar="TEXT"))
    conditioning_scale: float = field(default=1.0, metadata=_option(
        "scale of the ControlNet's residuals", metavar="F"))
    pretrained: str | None = field(default=None, metadata=_option(
        "the Stable Diffusion folder (default: the one the ControlNet was trained on, recorded in config.json)",
        metavar="SD_DIR"))
    half: bool = field(default=False, metadata=_option("run the pipeline in fp16 (GPU only)"))
