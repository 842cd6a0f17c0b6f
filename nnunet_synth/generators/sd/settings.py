"""Fine-tuning settings shared by the Stable Diffusion generators (stdlib only: ``--help`` imports it)."""
from __future__ import annotations

from dataclasses import dataclass, field

MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")
SAMPLERS = ("ddim", "pndm", "dpm")  # nnunet_synth.generators.sd.loading.make_sampler


def option(help: str, **metadata) -> dict:
    """A settings field's metadata: its help text, plus ``flag``, ``choices``, ``metavar`` or ``required``."""
    return {"help": help, **metadata}


@dataclass(frozen=True)
class SDFitOptions:
    """The options of every SD fine-tune, as in diffusers' training examples; generators add their own."""

    pretrained: str | None = field(default=None, metadata=option(
        "a local Stable Diffusion 1.x folder in diffusers' layout (unet/, vae/, text_encoder/, tokenizer/, "
        "scheduler/)", metavar="SD_DIR", required=True))
    allow_download: bool = field(default=False, metadata=option(
        "let --pretrained be a Hugging Face hub id that is downloaded (otherwise only local folders are read)"))
    resolution: int = field(default=512, metadata=option(
        "side of the square training images in pixels; a multiple of 8 (and of the VAE's downsampling)",
        metavar="R"))
    train_steps: int = field(default=1000, metadata=option(
        "total optimisation steps; rerunning with a larger value continues training", metavar="N"))
    batch_size: int = field(default=1, metadata=option("images per step and process", metavar="N"))
    gradient_accumulation_steps: int = field(default=1, metadata=option(
        "micro-batches whose gradients are summed before each update (effective batch = batch x this x "
        "processes)", metavar="N"))
    learning_rate: float = field(default=1e-5, metadata=option("AdamW learning rate", flag="--lr", metavar="F"))
    lr_warmup_steps: int = field(default=0, metadata=option("linear learning-rate warm-up steps", metavar="N"))
    use_ema: bool = field(default=False, metadata=option(
        "keep an exponential moving average of the trained model and save it instead of the last weights"))
    ema_decay: float = field(default=0.9999, metadata=option("decay of the EMA (with --use-ema)", metavar="F"))
    snr_gamma: float | None = field(default=None, metadata=option(
        "Min-SNR loss weighting with this gamma (5.0 is the paper's); default: plain MSE", metavar="G"))
    noise_offset: float = field(default=0.0, metadata=option(
        "offset noise scale (0.1 is common); helps very dark or bright images", metavar="F"))
    gradient_checkpointing: bool = field(default=False, metadata=option(
        "recompute activations in the backward pass: less memory, slower"))
    use_8bit_adam: bool = field(default=False, metadata=option("bitsandbytes' 8-bit AdamW (needs bitsandbytes)"))
    mixed_precision: str = field(default="auto", metadata=option(
        "accelerate's mixed precision; the trained model stays fp32 and the frozen ones run in the half type; "
        "auto = fp16 on a GPU, no on the CPU", choices=MIXED_PRECISIONS))
    checkpointing_steps: int = field(default=500, metadata=option(
        "save a resumable accelerate checkpoint every N steps", metavar="N"))
    checkpoints_total_limit: int = field(default=2, metadata=option(
        "keep at most this many checkpoints (the oldest are deleted)", metavar="N"))
    seed: int = field(default=0, metadata=option(
        "seed of the training draws (images, noise, timesteps); a resumed run repeats an uninterrupted one",
        flag="--fit-seed", metavar="S"))
    cpu: bool = field(default=False, metadata=option("train on the CPU even when a GPU is present"))


# Settings that may change between a run and its resumption (the rest must match the folder's config.json).
RESUMABLE_CHANGES = {"train_steps", "checkpointing_steps", "checkpoints_total_limit", "mixed_precision",
                     "gradient_checkpointing", "cpu", "allow_download", "pretrained"}
