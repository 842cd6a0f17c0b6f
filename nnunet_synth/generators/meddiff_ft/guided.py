"""Guided-mask synthesis: the region inside a mask is generated, the outside follows a background image.

Runs diffusers' ``StableDiffusionInpaintPipeline`` (a 9-channel UNet sees the
mask and the masked background as its conditioning) and blends the latents in
its ``callback_on_step_end`` after every step i (the pipeline's x_t -> x_{t-1}):

    x_{t-1} = M_i * x_{t-1} + (1 - M_i) * add_noise(z_background, noise, t-1)

where ``z_background`` is the VAE encoding (its mean) of the background and
``t-1`` the next timestep of the schedule; after the last step the outside is
``z_background`` itself, so once decoded it is the background's VAE round trip.

Dynamic mask: ``M_i`` is the lesion mask at latent resolution (max-pooled: a
latent pixel belongs to it if any of its pixels does) dilated by
``d_i = round(dilation_start * max(0, 1 - i / (tighten_until * N)))`` latent
pixels, N the number of steps: wide early, when the coarse layout forms and
the lesion must merge with its surroundings, exact late, when details form.
The pipeline's own conditioning mask is the widest one (``M_0``).

RePaint (Lugmayr et al. 2022), optional: during the first ``repaint_until``
fraction of the steps, each blended x_{t-1} is re-noised to x_t with
q(x_t | x_{t-1}) and denoised again ``jumps`` times, with the pipeline's UNet
and scheduler step (DDIM only: its step keeps no state between calls).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class GuidedOptions:
    steps: int
    guidance_scale: float
    dilation_start: int = 2
    tighten_until: float = 0.5
    repaint_jumps: int = 0
    repaint_until: float = 0.5


def dilation_schedule(steps: int, start: int, tighten_until: float) -> list[int]:
    """The dilation (latent pixels) of the blend mask after each step: ``start`` shrinking linearly to 0."""
    span = tighten_until * steps
    return [int(round(start * max(0.0, 1.0 - i / span))) if span > 0 else 0 for i in range(steps)]


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """(1, 1, h, w) {0, 1} dilated by a (2p+1)-square (max pooling)."""
    if pixels <= 0:
        return mask
    return torch.nn.functional.max_pool2d(mask, 2 * pixels + 1, stride=1, padding=pixels)


def encode_background(vae, background: torch.Tensor) -> torch.Tensor:
    """Scaled latents of a (1, 3, R, R) image in [-1, 1] (the distribution's mean: no draw)."""
    with torch.no_grad():
        return vae.encode(background).latent_dist.mean * vae.config.scaling_factor


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1)


def guided_synthesis(pipeline, background: np.ndarray, mask: np.ndarray, prompt_embeds, negative_embeds,
                     options: GuidedOptions, seed: int) -> dict:
    """Generate inside ``mask`` (R, R) bool on ``background`` (3, R, R) in [-1, 1].

    Returns ``image`` (3, R, R) in [-1, 1] (the decoded blended latents inside ``region``, the
    background's VAE round trip outside), ``latents`` (the final ones), ``background_latents``, ``latent_masks`` (M_i per step, (1, 1, h, w)) and ``region``
    (R, R) bool: the final blend mask at pixel resolution, where the image is generated.
    """
    device, dtype = pipeline.vae.device, pipeline.unet.dtype
    vae = pipeline.vae
    image = torch.from_numpy(np.ascontiguousarray(background[None], dtype=np.float32)).to(device, dtype)
    factor = pipeline.vae_scale_factor
    side = background.shape[-1]
    latent_side = side // factor
    base = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(mask[None, None].astype(np.float32)),
                                                   (latent_side, latent_side)).to(device, dtype)
    schedule = dilation_schedule(options.steps, options.dilation_start, options.tighten_until)
    masks = [dilate(base, d) for d in schedule]
    condition = torch.nn.functional.interpolate(masks[0], scale_factor=factor, mode="nearest")
    z_background = encode_background(vae, image)
    generator = torch.Generator().manual_seed(int(seed) % 2 ** 63)
    noise = torch.randn(z_background.shape, generator=torch.Generator().manual_seed((int(seed) + 1) % 2 ** 63))
    noise = noise.to(device, dtype)
    repaint_steps = int(options.repaint_until * options.steps) if options.repaint_jumps > 0 else 0

    def known(scheduler, i):
        timesteps = scheduler.timesteps
        if i + 1 >= len(timesteps):
            return z_background
        return scheduler.add_noise(z_background, noise, timesteps[i + 1:i + 2])

    def blend(pipe, i, t, kwargs):
        latents = kwargs["latents"]
        m = masks[min(i, len(masks) - 1)]
        latents = m * latents + (1 - m) * known(pipe.scheduler, i)
        if i < repaint_steps and i + 1 < len(pipe.scheduler.timesteps):
            latents = _resample(pipe, i, t, latents, kwargs, m, known(pipe.scheduler, i), options.repaint_jumps,
                                generator)
        return {"latents": latents}

    inputs = ["latents", "prompt_embeds", "mask", "masked_image_latents"]
    with torch.no_grad():
        latents = pipeline(prompt_embeds=prompt_embeds.to(dtype), negative_prompt_embeds=negative_embeds.to(dtype),
                           image=(image + 1) / 2, mask_image=condition, height=side, width=side, strength=1.0,
                           num_inference_steps=options.steps, guidance_scale=options.guidance_scale,
                           generator=generator, output_type="latent", callback_on_step_end=blend,
                           callback_on_step_end_tensor_inputs=inputs).images
    final = torch.nn.functional.interpolate(masks[-1], scale_factor=factor, mode="nearest")
    region = final[0, 0].cpu().numpy() > 0.5
    # The latents outside M are the background's exactly, but the VAE decoder normalises and attends over
    # the whole image, so decoded pixels there still shift with the new content; outside the region the
    # image is therefore the background's own VAE round trip.
    generated = decode(vae, latents)[0].float().cpu().numpy()
    round_trip = decode(vae, z_background)[0].float().cpu().numpy()
    return {"image": np.where(region, generated, round_trip), "latents": latents, "background_latents": z_background,
            "latent_masks": masks, "region": region}


def _resample(pipe, i, t, latents, kwargs, m, known_latents, jumps: int, generator):
    """RePaint's jumps at step i: x_{t-1} -> x_t (forward) -> x_{t-1} (the UNet and the DDIM step), blended."""
    from diffusers import DDIMScheduler

    if not isinstance(pipe.scheduler, DDIMScheduler):
        raise ValueError("RePaint jumps need the DDIM scheduler (--scheduler ddim)")
    scheduler = pipe.scheduler
    previous = scheduler.timesteps[i + 1]
    alpha = scheduler.alphas_cumprod[int(t)] / scheduler.alphas_cumprod[int(previous)]
    guided = pipe.do_classifier_free_guidance
    for _ in range(jumps):
        eps = torch.randn(latents.shape, generator=generator).to(latents)
        x_t = alpha.sqrt().to(latents) * latents + (1 - alpha).sqrt().to(latents) * eps
        model_input = torch.cat([x_t] * 2) if guided else x_t
        model_input = torch.cat([scheduler.scale_model_input(model_input, t), kwargs["mask"],
                                 kwargs["masked_image_latents"]], dim=1)
        predicted = pipe.unet(model_input, t, encoder_hidden_states=kwargs["prompt_embeds"], return_dict=False)[0]
        if guided:
            uncond, text = predicted.chunk(2)
            predicted = uncond + pipe.guidance_scale * (text - uncond)
        latents = scheduler.step(predicted, t, x_t, return_dict=False)[0]
        latents = m * latents + (1 - m) * known_latents
    return latents
