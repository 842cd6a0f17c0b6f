"""Fine-tuning Stable Diffusion's UNet on lesion-centred crops (``nnunet-synth fit sd-inpaint``).

The structure is that of diffusers' ``examples/text_to_image/train_text_to_image.py``:
accelerate, a frozen VAE and text encoder (in the half type under mixed
precision, the trained UNet in fp32), optional EMA, Min-SNR weighting, offset
noise, gradient checkpointing and 8-bit Adam, and ``accelerator.save_state``
checkpoints with a total limit.

Training data: every connected component of the lesion label in the training
masks gives crops: a square window ``context`` times the lesion's larger side
(at least ``MIN_WINDOW_PX``), jittered in position and size and flipped left-
right at random, resized (never stretched) to ``resolution``. Grayscale images
are repeated to RGB. Each crop is captioned with the domain prompt.

* 4-channel UNet (SD v1.4 / v1.5): the usual noise-prediction loss on the crop.
* 9-channel UNet (SD inpainting checkpoints): the UNet also sees the mask (the
  lesion dilated by ``mask_dilation`` px, at latent resolution) and the latents
  of the crop with that region blanked, as diffusers' inpainting pipeline feeds
  it; the model learns to paint the lesion into its surroundings.

Every random draw of step ``n`` comes from generators seeded with ``(seed, n,
micro-batch, process)``, so a run resumed from a checkpoint takes the same
steps as an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nnunet_synth import __version__
from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import TrainingCase
from nnunet_synth.generators.sd.framing import Frame, square_box_around, to_model
from nnunet_synth.generators.sd.loading import encode_prompts
from nnunet_synth.generators.sd.placement import BANK_FILE, LesionBank
from nnunet_synth.generators.sd.settings import RESUMABLE_CHANGES
from nnunet_synth.generators.sd.training import (check_2d_cases, check_fit_options, diffusion_loss, encode_latents,
                                                 noise_like, prepare_training, resumed_steps, run_steps, save_trained,
                                                 start_fine_tune, target_of)
from nnunet_synth.generators.sd_inpaint import folder
from nnunet_synth.generators.sd_inpaint.settings import MIN_WINDOW_PX, SDInpaintFitOptions

JITTER_SHIFT = 0.1          # crop centre moved by up to this fraction of the window side
JITTER_SCALE = 0.15         # window side scaled by a factor in [1/(1+this), 1+this] (log-uniform)

def _check_cases(cases: list[TrainingCase], labels: list[int], label: int) -> None:
    check_2d_cases(cases, labels, "sd-inpaint")
    if label not in labels or label == 0:
        raise SynthError(f"--label {label} is not a foreground label of the dataset (labels {labels})")


class LesionCrops:
    """Random lesion-centred crops of the training cases, at the model's resolution."""

    def __init__(self, cases: list[TrainingCase], label: int, resolution: int, context: float, mask_dilation: int):
        from scipy import ndimage

        self.cases, self.label, self.resolution = cases, label, resolution
        self.context, self.mask_dilation = context, mask_dilation
        self.lesions = []  # (case index, component mask, bbox)
        for index, case in enumerate(cases):
            components, n = ndimage.label(case.seg == label)
            for k, box in enumerate(ndimage.find_objects(components), start=1):
                self.lesions.append((index, components == k, (box[0].start, box[1].start, box[0].stop, box[1].stop)))
        if not self.lesions:
            raise SynthError(f"no training case has label {label}: there is no lesion to fine-tune on")

    def frame(self, rng: np.random.Generator, index: int, bbox) -> Frame:
        shape = self.cases[index].seg.shape
        scale = math.exp(rng.uniform(-math.log1p(JITTER_SCALE), math.log1p(JITTER_SCALE)))
        side = max(bbox[2] - bbox[0], bbox[3] - bbox[1]) * self.context * scale
        dy, dx = (rng.uniform(-JITTER_SHIFT, JITTER_SHIFT, 2) * side).round().astype(int)
        y0, x0 = min(max(bbox[0] + dy, 0), shape[0] - 1), min(max(bbox[1] + dx, 0), shape[1] - 1)
        moved = (y0, x0, max(y0 + 1, min(bbox[2] + dy, shape[0])), max(x0 + 1, min(bbox[3] + dx, shape[1])))
        return square_box_around(moved, shape, max(1.0, side / max(moved[2] - moved[0], moved[3] - moved[1])),
                                 min(MIN_WINDOW_PX, max(shape)), resolution=self.resolution)

    def batch(self, rng: np.random.Generator, batch_size: int):
        """(images (B, 3, R, R) in [-1, 1], repaint masks (B, 1, R, R) in {0, 1})."""
        from scipy import ndimage

        images, masks = [], []
        for _ in range(batch_size):
            index, lesion, bbox = self.lesions[int(rng.integers(len(self.lesions)))]
            frame = self.frame(rng, index, bbox)
            image = to_model(self.cases[index].image, frame, order=1, fill=-1.0).astype(np.float32)
            mask = to_model(lesion, frame, order=0)
            if self.mask_dilation > 0:
                mask = ndimage.binary_dilation(mask, iterations=self.mask_dilation)
            if rng.random() < 0.5:
                image, mask = image[..., ::-1], mask[..., ::-1]
            if image.shape[0] == 1:
                image = np.repeat(image, 3, axis=0)
            images.append(np.clip(image, -1, 1))
            masks.append(mask[None].astype(np.float32))
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


def build_config(cases, labels, options: SDInpaintFitOptions, pretrained: str, unet_in_channels: int) -> dict:
    return {
        "_class_name": "SDInpaintGenerator",
        "format_version": folder.FORMAT_VERSION,
        "nnunet_synth_version": __version__,
        "pretrained": pretrained,
        "unet_in_channels": unet_in_channels,
        "image_channels": int(cases[0].image.shape[0]),
        "labels": [int(v) for v in sorted(labels)],
        "label": options.label,
        "resolution": options.resolution,
        "context": options.context,
        "mask_dilation": options.mask_dilation,
        "prompt": options.prompt,
        "settings": asdict(options),
    }


def fit_model(cases: list[TrainingCase], labels: list[int], model_dir: Path, options: SDInpaintFitOptions) -> None:
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    model_dir = Path(model_dir)
    labels = sorted(int(v) for v in labels)
    check_fit_options(options, "sd-inpaint")
    if options.context < 1:
        raise SynthError(f"--context must be at least 1 (the crop holds its lesion), got {options.context}")
    _check_cases(cases, labels, options.label)
    crops = LesionCrops(cases, options.label, options.resolution, options.context, options.mask_dilation)
    source, local_only, accelerator, weight_dtype, parts, unet = start_fine_tune(options)
    if unet.config.in_channels not in (4, 9):
        raise SynthError(f"{source}/unet has {unet.config.in_channels} input channels; sd-inpaint takes the "
                         f"4-channel UNet of SD 1.x or the 9-channel UNet of SD inpainting checkpoints")
    config = build_config(cases, labels, options, str(source), unet.config.in_channels)
    config["steps_trained"] = resumed_steps(model_dir, config, folder.read_config, RESUMABLE_CHANGES)
    if accelerator.is_main_process:
        folder.write_config(model_dir, config)
        LesionBank.from_cases(cases, options.label).save(model_dir / BANK_FILE)

    noise_scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", local_files_only=local_only)
    vae, text_encoder = parts.vae, parts.text_encoder
    if weight_dtype != torch.float32:  # the frozen parts in the half type; the trained UNet stays fp32
        vae, text_encoder = vae.to(dtype=weight_dtype), text_encoder.to(dtype=weight_dtype)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    prompt_embeds = encode_prompts(parts.tokenizer, text_encoder, [options.prompt], accelerator.device)
    if options.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet, optimizer, lr_scheduler, ema = prepare_training(accelerator, unet, options)
    nine_channels = config["unet_in_channels"] == 9

    def loss_of(rng, generator):
        images, masks = crops.batch(rng, options.batch_size)
        images, masks = images.to(accelerator.device, weight_dtype), masks.to(accelerator.device)
        with torch.no_grad():
            latents = encode_latents(vae, images, generator)
            noise = noise_like(latents, generator, options.noise_offset)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(latents),),
                                      generator=generator).to(accelerator.device)
            inputs = noise_scheduler.add_noise(latents, noise, timesteps)
            if nine_channels:
                masked = encode_latents(vae, images * (masks < 0.5), generator)
                small = F.interpolate(masks, size=latents.shape[-2:]).to(latents)
                inputs = torch.cat([inputs, small, masked], dim=1)
            target = target_of(noise_scheduler, latents, noise, timesteps)
        hidden = prompt_embeds.expand(len(latents), -1, -1)
        predicted = unet(inputs.float(), timesteps, hidden.float()).sample
        return diffusion_loss(predicted, target, timesteps, noise_scheduler, options.snr_gamma)

    run_steps(accelerator, unet, optimizer, lr_scheduler, ema, model_dir, options, loss_of,
              f"sd-inpaint fit {model_dir.name}")
    save_trained(accelerator, unet, ema, model_dir, folder.UNET_DIR, config, folder.write_config,
                 options.train_steps)
