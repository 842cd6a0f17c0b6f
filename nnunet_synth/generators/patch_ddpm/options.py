"""Command-line options of the patch-wise DDPM and the presets behind their defaults.

Stdlib only: ``nnunet-synth --help`` builds these parsers without importing torch.

Presets (``--preset``; ``auto`` picks by the data's dimensionality):

=======  ==========  ================  ==========  =====  ===========  =====  ========
preset   patch       channels          res blocks  batch  train steps  steps  sampling
=======  ==========  ================  ==========  =====  ===========  =====  ========
us2d     128x128     32,64,128,256     2           16     20000        50     tiled
ct3d     64x64x64    32,64,128,256     1           4      40000        50     tiled
=======  ==========  ================  ==========  =====  ===========  =====  ========

Every value of a preset can be overridden by its own option.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass

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

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("patch-ddpm training")
    g.add_argument("--preset", choices=["auto", *PRESETS], default="auto",
                   help="defaults for 2D ultrasound (us2d: 128x128 patches, channels 32,64,128,256, 2 res blocks, "
                        "batch 16, 20000 steps) or 3D CT (ct3d: 64^3 patches, channels 32,64,128,256, 1 res block, "
                        "batch 4, 40000 steps); both sample with 50 DDIM steps, tiled (overlap 0.5 for us2d, 0.25 "
                        "for ct3d); auto picks by the data's dimensionality (default)")
    g.add_argument("--patch-size", type=int, nargs="+", metavar="N",
                   help="training patch (one value per axis, or one for all); each a multiple of "
                        "2^(number of channels - 1) and at most the smallest training image")
    g.add_argument("--channels", type=int, nargs="+", metavar="C",
                   help="UNet feature channels per resolution level, e.g. 32 64 128 256")
    g.add_argument("--res-blocks", type=int, metavar="N", help="residual blocks per level")
    g.add_argument("--batch-size", type=int, metavar="N", help="patches per training step")
    g.add_argument("--train-steps", type=int, metavar="N",
                   help="total optimisation steps; rerunning with a larger value continues training")
    g.add_argument("--lr", type=float, default=1e-4, metavar="F", help="AdamW learning rate (default 1e-4)")
    g.add_argument("--ema-decay", type=float, default=0.999, metavar="F",
                   help="decay of the exponential moving average of the weights that is saved; 0 disables EMA "
                        "(default 0.999)")
    g.add_argument("--fg-fraction", type=float, default=0.5, metavar="F",
                   help="fraction of patches centred on a foreground voxel (default 0.5)")
    g.add_argument("--train-timesteps", type=int, default=1000, metavar="N",
                   help="diffusion timesteps of the DDPM training schedule (default 1000)")
    g.add_argument("--checkpoint-every", type=int, default=500, metavar="N",
                   help="save a resumable checkpoint into the model folder every N steps (default 500)")
    g.add_argument("--fit-seed", type=int, default=0, metavar="S",
                   help="seed of initial weights, patch sampling and noise; a resumed run repeats an uninterrupted one "
                        "(default 0)")
    g.add_argument("--mixed-precision", choices=["auto", "no", "fp16", "bf16"], default="auto",
                   help="accelerate's mixed precision; auto = bf16 on a GPU that supports it, else no")
    g.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("patch-ddpm sampling")
    g.add_argument("--sampler", choices=["ddim", "dpm"], default="ddim",
                   help="ddim (DDIMScheduler, default) or dpm (DPMSolverMultistepScheduler), both built from the "
                        "model's training schedule")
    g.add_argument("--steps", type=int, metavar="N",
                   help="denoising steps (default: the preset's, 50)")
    g.add_argument("--sampling", choices=["full", "tiled"],
                   help="full: one network call per step on the whole (padded) image; tiled: overlapping "
                        "patch-size tiles blended with a Gaussian window, memory independent of image size "
                        "(default: the preset's, tiled)")
    g.add_argument("--tile-overlap", type=float, metavar="F",
                   help="overlap of neighbouring tiles as a fraction of the patch, in [0, 1) "
                        "(default: the preset's, 0.5 for us2d and 0.25 for ct3d)")
    g.add_argument("--tile-batch", type=int, default=4, metavar="N",
                   help="tiles per network call; more is faster on a GPU and uses more memory (default 4)")


def _per_axis(values, spatial_dims: int, name: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if len(values) == 1:
        values = values * spatial_dims
    if len(values) != spatial_dims:
        raise SynthError(f"--{name} has {len(values)} values but the images have {spatial_dims} spatial axes")
    return values


def resolve_fit_settings(args: argparse.Namespace, spatial_dims: int) -> FitSettings:
    """Preset defaults overridden by explicit options, checked once here."""
    preset_name = getattr(args, "preset", "auto") or "auto"
    if preset_name == "auto":
        if spatial_dims not in AUTO_PRESET:
            raise SynthError(f"patch-ddpm supports 2D and 3D images, not {spatial_dims}D")
        preset_name = AUTO_PRESET[spatial_dims]
    preset = PRESETS[preset_name]
    if preset["spatial_dims"] != spatial_dims:
        raise SynthError(f"--preset {preset_name} is for {preset['spatial_dims']}D images but the training images "
                         f"are {spatial_dims}D; use --preset auto or {AUTO_PRESET.get(spatial_dims, 'auto')}")

    def pick(name, key=None):
        value = getattr(args, name, None)
        return preset[key or name] if value is None else value

    channels = tuple(int(c) for c in pick("channels"))
    settings = FitSettings(
        preset=preset_name,
        patch_size=_per_axis(pick("patch_size"), spatial_dims, "patch-size"),
        channels=channels,
        res_blocks=int(pick("res_blocks")),
        batch_size=int(pick("batch_size")),
        train_steps=int(pick("train_steps")),
        learning_rate=float(getattr(args, "lr", 1e-4)),
        ema_decay=float(getattr(args, "ema_decay", 0.999)),
        foreground_fraction=float(getattr(args, "fg_fraction", 0.5)),
        num_train_timesteps=int(getattr(args, "train_timesteps", 1000)),
        checkpoint_every=int(getattr(args, "checkpoint_every", 500)),
        seed=int(getattr(args, "fit_seed", 0)),
        mixed_precision=str(getattr(args, "mixed_precision", "auto")),
        sampling_steps=preset["sampling_steps"],
        sampling=preset["sampling"],
        tile_overlap=preset["tile_overlap"],
    )
    _check(settings)
    return settings


def _check(s: FitSettings) -> None:
    if not s.channels or min(s.channels) < 1:
        raise SynthError(f"--channels must be positive integers, got {list(s.channels)}")
    factor = s.downsampling_factor
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


def norm_groups(channels: tuple[int, ...]) -> int:
    """GroupNorm groups that divide every level's channels (MONAI requires it), at most 32."""
    return math.gcd(32, *channels)
