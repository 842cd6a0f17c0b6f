"""Settings of the patch-wise DDPM, and the presets behind their defaults.

Stdlib only, so the command layer can build ``--help`` without torch.

Presets (``preset``; ``auto`` picks by the data's dimensionality):

=======  ==========  ================  ==========  =====  ===========  =====  ========
preset   patch       channels          res blocks  batch  train steps  steps  sampling
=======  ==========  ================  ==========  =====  ===========  =====  ========
us2d     128x128     32,64,128,256     2           16     20000        50     tiled
ct3d     64x64x64    32,64,128,256     1           4      40000        50     tiled
=======  ==========  ================  ==========  =====  ===========  =====  ========

A field left at ``None`` takes the preset's value (fit) or the value stored
with the model (generate); every other default is written once, in its field.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from nnunet_synth.errors import SynthError

PRESETS: dict[str, dict] = {
    # 2D ultrasound: images of a few hundred pixels; 128 px patches hold a whole
    # thyroid/breast lesion with context, and sampling stays tiled so any
    # image size fits in memory.
    "us2d": dict(spatial_dims=2, patch_size=(128, 128), channels=(32, 64, 128, 256), res_blocks=2,
                 batch_size=16, train_steps=20000, sampling_steps=50, sampling="tiled", tile_overlap=0.5),
    # 3D CT: 64^3 patches cover a lung nodule with its surroundings; 3D convs are
    # expensive, so one residual block per level, a smaller batch and less tile
    # overlap when sampling.
    "ct3d": dict(spatial_dims=3, patch_size=(64, 64, 64), channels=(32, 64, 128, 256), res_blocks=1,
                 batch_size=4, train_steps=40000, sampling_steps=50, sampling="tiled", tile_overlap=0.25),
}
AUTO_PRESET = {2: "us2d", 3: "ct3d"}
SAMPLERS = ("ddim", "dpm")
SAMPLINGS = ("full", "tiled")
# diffusers.optimization.get_scheduler names; the last two decay to 0 at --train-steps.
LR_SCHEDULES = ("constant", "constant_with_warmup", "cosine", "linear")
LR_SCHEDULES_OVER_TRAIN_STEPS = ("cosine", "linear")


def _option(help: str, **metadata):
    return {"help": help, **metadata}


@dataclass(frozen=True)
class PatchDDPMFitOptions:
    """What a user chooses for ``nnunet-synth fit patch-ddpm`` (``None``: the preset's value)."""

    preset: str = field(default="auto", metadata=_option(
        "defaults for 2D ultrasound (us2d: 128x128 patches, channels 32,64,128,256, 2 res blocks, batch 16, 20000 "
        "steps) or 3D CT (ct3d: 64^3 patches, channels 32,64,128,256, 1 res block, batch 4, 40000 steps); both "
        "sample with 50 DDIM steps, tiled (overlap 0.5 for us2d, 0.25 for ct3d); auto picks by the data's "
        "dimensionality", choices=("auto", *PRESETS)))
    patch_size: tuple[int, ...] | None = field(default=None, metadata=_option(
        "training patch (one value per axis, or one for all); each a multiple of 2^(number of channels - 1) and at "
        "most the smallest training image", metavar="N"))
    channels: tuple[int, ...] | None = field(default=None, metadata=_option(
        "UNet feature channels per resolution level, e.g. 32 64 128 256", metavar="C"))
    res_blocks: int | None = field(default=None, metadata=_option("residual blocks per level", metavar="N"))
    batch_size: int | None = field(default=None, metadata=_option("patches per training step", metavar="N"))
    train_steps: int | None = field(default=None, metadata=_option(
        "total optimisation steps; rerunning with a larger value continues training", metavar="N"))
    learning_rate: float = field(default=1e-4, metadata=_option("AdamW learning rate", flag="--lr", metavar="F"))
    lr_scheduler: str = field(default="constant", metadata=_option(
        "learning-rate schedule (diffusers.optimization.get_scheduler): constant, constant_with_warmup (linear "
        "warm-up from 0, then constant), cosine or linear (warm-up, then decay to 0 at --train-steps; a model "
        "trained with these cannot be trained further with a larger --train-steps)", choices=LR_SCHEDULES))
    lr_warmup_steps: int = field(default=0, metadata=_option(
        "linear learning-rate warm-up steps (not with --lr-scheduler constant)", metavar="N"))
    ema_decay: float = field(default=0.999, metadata=_option(
        "decay of the exponential moving average of the weights that is saved; 0 disables EMA", metavar="F"))
    foreground_fraction: float = field(default=0.5, metadata=_option(
        "fraction of patches centred on a foreground voxel", flag="--fg-fraction", metavar="F"))
    num_train_timesteps: int = field(default=1000, metadata=_option(
        "diffusion timesteps of the DDPM training schedule", flag="--train-timesteps", metavar="N"))
    checkpoint_every: int = field(default=500, metadata=_option(
        "save a resumable checkpoint into the model folder every N steps", metavar="N"))
    seed: int = field(default=0, metadata=_option(
        "seed of initial weights, patch sampling and noise; a resumed run repeats an uninterrupted one",
        flag="--fit-seed", metavar="S"))
    mixed_precision: str = field(default="auto", metadata=_option(
        "accelerate's mixed precision; auto = bf16 on a GPU that supports it, else no",
        choices=("auto", "no", "fp16", "bf16")))
    cpu: bool = field(default=False, metadata=_option("train on the CPU even when a GPU is present"))


@dataclass(frozen=True)
class PatchDDPMGenerateOptions:
    """What a user chooses for ``nnunet-synth generate patch-ddpm`` (``None``: the model's stored value)."""

    sampler: str = field(default="ddim", metadata=_option(
        "ddim (DDIMScheduler) or dpm (DPMSolverMultistepScheduler), both built from the model's training schedule",
        choices=SAMPLERS))
    steps: int | None = field(default=None, metadata=_option("denoising steps (default: the preset's, 50)",
                                                             metavar="N"))
    sampling: str | None = field(default=None, metadata=_option(
        "full: one network call per step on the whole (padded) image; tiled: overlapping patch-size tiles blended "
        "with a Gaussian window, memory independent of image size (default: the preset's, tiled)",
        choices=SAMPLINGS))
    tile_overlap: float | None = field(default=None, metadata=_option(
        "overlap of neighbouring tiles as a fraction of the patch, in [0, 1) (default: the preset's, 0.5 for us2d "
        "and 0.25 for ct3d)", metavar="F"))
    tile_batch: int = field(default=4, metadata=_option(
        "tiles per network call; more is faster on a GPU and uses more memory", metavar="N"))
    strength: float = field(default=1.0, metadata=_option(
        "img2img as in diffusers: start from the source image noised to strength x the schedule and run the last "
        "int(steps x strength) steps; in (0, 1]; 1 starts from pure noise, smaller keeps more of the real image "
        "(its anatomy) and changes less of its appearance", metavar="S"))


@dataclass
class FitSettings:
    """Everything that decides how the model is built and trained (written to config.json)."""

    preset: str
    patch_size: tuple[int, ...]
    channels: tuple[int, ...]
    res_blocks: int
    batch_size: int
    train_steps: int
    learning_rate: float
    lr_scheduler: str
    lr_warmup_steps: int
    ema_decay: float
    foreground_fraction: float
    num_train_timesteps: int
    checkpoint_every: int
    seed: int
    mixed_precision: str
    sampling_steps: int
    sampling: str
    tile_overlap: float

    def to_json(self) -> dict:
        return asdict(self)


def downsampling_factor(channels) -> int:
    """How much the UNet shrinks an image: it halves the resolution once per level after the first."""
    return 2 ** (len(channels) - 1)


def _per_axis(values, spatial_dims: int, name: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if len(values) == 1:
        values = values * spatial_dims
    if len(values) != spatial_dims:
        raise SynthError(f"--{name} has {len(values)} values but the images have {spatial_dims} spatial axes")
    return values


def resolve_fit_settings(options: PatchDDPMFitOptions, spatial_dims: int) -> FitSettings:
    """Preset defaults overridden by explicit options, checked once here."""
    preset_name = options.preset
    if preset_name == "auto":
        if spatial_dims not in AUTO_PRESET:
            raise SynthError(f"patch-ddpm supports 2D and 3D images, not {spatial_dims}D")
        preset_name = AUTO_PRESET[spatial_dims]
    if preset_name not in PRESETS:
        raise SynthError(f"--preset {preset_name!r}: expected auto or one of {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    if preset["spatial_dims"] != spatial_dims:
        raise SynthError(f"--preset {preset_name} is for {preset['spatial_dims']}D images but the training images "
                         f"are {spatial_dims}D; use --preset auto or {AUTO_PRESET.get(spatial_dims, 'auto')}")

    def pick(name):
        value = getattr(options, name)
        return preset[name] if value is None else value

    settings = FitSettings(
        preset=preset_name,
        patch_size=_per_axis(pick("patch_size"), spatial_dims, "patch-size"),
        channels=tuple(int(c) for c in pick("channels")),
        res_blocks=int(pick("res_blocks")),
        batch_size=int(pick("batch_size")),
        train_steps=int(pick("train_steps")),
        learning_rate=float(options.learning_rate),
        lr_scheduler=str(options.lr_scheduler),
        lr_warmup_steps=int(options.lr_warmup_steps),
        ema_decay=float(options.ema_decay),
        foreground_fraction=float(options.foreground_fraction),
        num_train_timesteps=int(options.num_train_timesteps),
        checkpoint_every=int(options.checkpoint_every),
        seed=int(options.seed),
        mixed_precision=str(options.mixed_precision),
        sampling_steps=preset["sampling_steps"],
        sampling=preset["sampling"],
        tile_overlap=preset["tile_overlap"],
    )
    _check(settings)
    return settings


def _check(s: FitSettings) -> None:
    if not s.channels or min(s.channels) < 1:
        raise SynthError(f"--channels must be positive integers, got {list(s.channels)}")
    factor = downsampling_factor(s.channels)
    if any(p < 1 or p % factor for p in s.patch_size):
        raise SynthError(f"--patch-size {list(s.patch_size)}: each value must be a positive multiple of {factor} "
                         f"(the UNet halves the resolution {len(s.channels) - 1} times with {len(s.channels)} channels)")
    for name, value in (("res-blocks", s.res_blocks), ("batch-size", s.batch_size), ("train-steps", s.train_steps),
                        ("train-timesteps", s.num_train_timesteps), ("checkpoint-every", s.checkpoint_every)):
        if value < 1:
            raise SynthError(f"--{name} must be at least 1, got {value}")
    if not 0 <= s.ema_decay < 1:
        raise SynthError(f"--ema-decay must be in [0, 1), got {s.ema_decay}")
    if not 0 <= s.foreground_fraction <= 1:
        raise SynthError(f"--fg-fraction must be in [0, 1], got {s.foreground_fraction}")
    if s.learning_rate <= 0:
        raise SynthError(f"--lr must be positive, got {s.learning_rate}")
    if s.lr_scheduler not in LR_SCHEDULES:
        raise SynthError(f"--lr-scheduler {s.lr_scheduler!r}: expected one of {', '.join(LR_SCHEDULES)}")
    if not 0 <= s.lr_warmup_steps <= s.train_steps:
        raise SynthError(f"--lr-warmup-steps must be between 0 and --train-steps ({s.train_steps}), "
                         f"got {s.lr_warmup_steps}")
    if s.lr_warmup_steps and s.lr_scheduler == "constant":
        raise SynthError(f"--lr-warmup-steps {s.lr_warmup_steps} has no effect with --lr-scheduler constant; "
                         f"use --lr-scheduler constant_with_warmup")
    if s.mixed_precision not in ("auto", "no", "fp16", "bf16"):
        raise SynthError(f"--mixed-precision {s.mixed_precision!r}: expected auto, no, fp16 or bf16")


def resolve_generate_options(options: PatchDDPMGenerateOptions, config: dict) -> PatchDDPMGenerateOptions:
    """Every ``None`` replaced by the value stored with the model, and the result checked."""
    stored = config["settings"]
    resolved = replace(options,
                       steps=int(stored["sampling_steps"] if options.steps is None else options.steps),
                       sampling=stored["sampling"] if options.sampling is None else options.sampling,
                       tile_overlap=float(stored["tile_overlap"] if options.tile_overlap is None
                                          else options.tile_overlap))
    timesteps = config["scheduler"]["num_train_timesteps"]
    if resolved.sampler not in SAMPLERS:
        raise SynthError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {resolved.sampler!r}")
    if not 1 <= resolved.steps <= timesteps:
        raise SynthError(f"--steps must be between 1 and {timesteps} (the model's training timesteps), "
                         f"got {resolved.steps}")
    if resolved.sampling not in SAMPLINGS:
        raise SynthError(f"--sampling must be full or tiled, got {resolved.sampling!r}")
    if not 0 <= resolved.tile_overlap < 1:
        raise SynthError(f"--tile-overlap must be in [0, 1), got {resolved.tile_overlap}")
    if resolved.tile_batch < 1:
        raise SynthError(f"--tile-batch must be at least 1, got {resolved.tile_batch}")
    if not 0 < resolved.strength <= 1:  # NaN fails too
        raise SynthError(f"--strength must be in (0, 1], got {resolved.strength}")
    if img2img_steps(resolved.steps, resolved.strength) < 1:
        raise SynthError(f"--strength {resolved.strength} with --steps {resolved.steps} leaves no denoising step "
                         f"(int(steps x strength) = 0); raise --strength or --steps")
    return resolved


def img2img_steps(steps: int, strength: float) -> int:
    """Denoising steps run for ``strength``: the ``init_timestep`` of diffusers' img2img pipelines."""
    return min(int(steps * strength), steps)


def norm_groups(channels: tuple[int, ...]) -> int:
    """GroupNorm groups that divide every level's channels (MONAI requires it), at most 32."""
    return math.gcd(32, *channels)
