"""Sampling whole images and volumes from the patch-trained network.

Two ways to get the noise prediction for the whole image at each denoising step:

* ``FullPredictor``: one network call on the whole image. The network is fully
  convolutional; the image is padded at the far end of each axis to a multiple
  of the network's downsampling factor (noisy image 0, mask background,
  coordinates continued past 1) and the prediction cropped back. Memory grows
  with the image. GroupNorm statistics and the self-attention of MONAI's middle
  block then span the whole image instead of a patch as in training; that
  attention costs time quadratic in the number of bottleneck voxels.
* ``TiledPredictor``: overlapping tiles of the training patch size, placed like
  nnU-Net's sliding window (``compute_steps_for_sliding_window``) and blended
  with its Gaussian importance map (``compute_gaussian``). Network memory is
  that of ``tile_batch`` patches whatever the image size; only a few
  image-sized buffers (state, blend accumulator, weights, the mask) grow.

The scheduler (DDIM or DPM-Solver, built from the model's DDPM config) updates
the whole image after each step. All random numbers come from one CPU
``torch.Generator`` seeded with the sample's seed, so a sample is fully
determined by (model, mask, seed, sampling options) on a given device.

With ``strength`` S < 1 (img2img), sampling starts from the source image noised
with the scheduler's own ``add_noise`` at the timestep where the last
int(steps x S) steps begin, as diffusers' img2img pipelines do; S = 1 starts
from pure noise, exactly as without the option (diffusers' inpainting pipeline
makes the same distinction, ``is_strength_max``).
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from nnunet_synth.errors import SynthError
from nnunet_synth.generators.patch_ddpm.network import coordinates, one_hot
from nnunet_synth.generators.patch_ddpm.settings import (SAMPLERS, PatchDDPMGenerateOptions, downsampling_factor,
                                                         img2img_steps)
from nnunet_synth.labels import check_label_values


def make_scheduler(sampler: str, ddpm_config: dict):
    """DDIM or DPM-Solver++ with the noise schedule the network was trained on."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    trained = DDPMScheduler.from_config(ddpm_config)
    if sampler == "ddim":
        return DDIMScheduler.from_config(trained.config)
    if sampler == "dpm":
        return DPMSolverMultistepScheduler.from_config(trained.config)
    raise SynthError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")


def _window(start: tuple[int, ...], size: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(s, s + n) for s, n in zip(start, size))


def tile_starts(image_shape: tuple[int, ...], patch_size: tuple[int, ...], overlap: float) -> list[tuple[int, ...]]:
    """Tile origins covering the image; neighbours overlap by about ``overlap`` of the patch."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    if any(s < p for s, p in zip(image_shape, patch_size)):
        raise SynthError(f"image {'x'.join(map(str, image_shape))} is smaller than the model's patch "
                         f"{'x'.join(map(str, patch_size))}; tiled sampling needs images at least the patch size, "
                         f"use --sampling full")
    steps = compute_steps_for_sliding_window(tuple(image_shape), tuple(patch_size), 1.0 - overlap)
    return [tuple(int(v) for v in s) for s in itertools.product(*steps)]


class FullPredictor:
    def __init__(self, network, mask: torch.Tensor, foreground: list[int], factor: int, device):
        self.network = network
        self.shape = tuple(mask.shape)
        self.pad = [(-s) % factor for s in self.shape]
        padded = tuple(s + p for s, p in zip(self.shape, self.pad))
        seg = F.pad(mask[None], self._pad_spec()).to(device)
        self.condition = torch.cat([one_hot(seg, foreground),
                                    coordinates([(0,) * len(padded)], padded, self.shape, device=device)], dim=1)
        self.calls = 0

    def _pad_spec(self) -> list[int]:
        # F.pad lists (before, after) pairs from the last axis backwards.
        return [v for p in reversed(self.pad) for v in (0, p)]

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([F.pad(x, self._pad_spec()), self.condition], dim=1)
        self.calls += 1
        eps = self.network(inputs, t.reshape(1).expand(1))
        return eps[(slice(None), slice(None)) + tuple(slice(0, s) for s in self.shape)]


class TiledPredictor:
    def __init__(self, network, mask: torch.Tensor, foreground: list[int], patch_size: tuple[int, ...],
                 overlap: float, tile_batch: int, device):
        from nnunetv2.inference.sliding_window_prediction import compute_gaussian

        self.network = network
        self.mask = mask  # stays on the CPU as small integers; tiles are cut and moved per call
        self.shape = tuple(mask.shape)
        self.foreground = foreground
        self.patch = tuple(patch_size)
        self.device = device
        self.starts = tile_starts(self.shape, self.patch, overlap)
        self.batches = [self.starts[i:i + tile_batch] for i in range(0, len(self.starts), tile_batch)]
        self.gaussian = compute_gaussian(self.patch, sigma_scale=1. / 8, value_scaling_factor=1,
                                         dtype=torch.float32, device=device)
        self.weights = torch.zeros(self.shape, dtype=torch.float32, device=device)
        for start in self.starts:
            self.weights[_window(start, self.patch)] += self.gaussian
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        blended = torch.zeros_like(x)
        for starts in self.batches:
            windows = [_window(s, self.patch) for s in starts]
            noisy = torch.stack([x[0][(slice(None),) + w] for w in windows])
            seg = torch.stack([self.mask[w] for w in windows]).to(self.device)
            inputs = torch.cat([noisy, one_hot(seg, self.foreground),
                                coordinates(starts, self.patch, self.shape, device=self.device)], dim=1)
            self.calls += 1
            eps = self.network(inputs, t.reshape(1).expand(len(starts)))
            for e, w in zip(eps, windows):
                blended[0][(slice(None),) + w].addcmul_(e, self.gaussian)
        return blended.div_(self.weights)


def img2img_timesteps(scheduler, steps: int, strength: float) -> torch.Tensor:
    """The timesteps left to run for ``strength``, as ``StableDiffusionImg2ImgPipeline.get_timesteps`` finds them."""
    t_start = max(steps - img2img_steps(steps, strength), 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    return timesteps


def denoise(predictor, scheduler, shape: tuple[int, ...], steps: int, seed: int, device,
            progress: bool = False, source: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
    """Run the reverse process from seeded noise, or from ``source`` (1, C, *S) noised to ``strength``.

    Returns (1, C, *S) on ``device``.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    scheduler.set_timesteps(steps)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    timesteps = scheduler.timesteps
    if strength == 1.0:
        x = (noise * scheduler.init_noise_sigma).to(device)
    else:
        if source is None or tuple(source.shape) != tuple(shape):
            raise SynthError(f"--strength {strength} needs the source image, shape {shape}, got "
                             f"{None if source is None else tuple(source.shape)}")
        timesteps = img2img_timesteps(scheduler, steps, strength)
        x = scheduler.add_noise(source.float(), noise, timesteps[:1]).to(device)
    for t in tqdm(timesteps, desc="denoising", leave=False, disable=not progress):
        t = t.to(device)
        eps = predictor(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x


def check_mask(mask: np.ndarray, spatial_dims: int, labels: list[int], where: str) -> None:
    if mask.ndim != spatial_dims:
        raise SynthError(f"mask has {mask.ndim} axes but the model in {where} is {spatial_dims}D")
    check_label_values(mask, labels, "the mask", allowed_from=f"the model in {where}")


@torch.inference_mode()
def sample_image(network, config: dict, mask: np.ndarray, seed: int, options: PatchDDPMGenerateOptions, device,
                 progress: bool = False, source: np.ndarray | None = None) -> np.ndarray:
    """An image (float32, (C, *mask.shape), in [-1, 1]) for ``mask``.

    ``source`` (C, *mask.shape) in [-1, 1] is the image img2img starts from when ``options.strength`` < 1.
    """
    foreground = [v for v in config["labels"] if v != 0]
    # Small integers: the mask is kept whole for the whole run, tiles are cut from it.
    dtype = np.int16 if max(config["labels"]) < 2 ** 15 else np.int64
    mask_t = torch.from_numpy(np.ascontiguousarray(mask).astype(dtype))
    if options.sampling == "full":
        factor = downsampling_factor(config["network"]["channels"])
        predictor = FullPredictor(network, mask_t, foreground, factor, device)
    else:
        predictor = TiledPredictor(network, mask_t, foreground, tuple(config["patch_size"]), options.tile_overlap,
                                   options.tile_batch, device)
    scheduler = make_scheduler(options.sampler, config["scheduler"])
    source_t = None if source is None else torch.from_numpy(np.asarray(source, dtype=np.float32))[None]
    x = denoise(predictor, scheduler, (1, config["image_channels"]) + tuple(mask.shape), options.steps, seed,
                device, progress, source=source_t, strength=options.strength)
    return x.clamp(-1, 1)[0].float().cpu().numpy()
