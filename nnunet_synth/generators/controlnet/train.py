"""Training the DiffBoost ControlNet on a frozen Stable Diffusion 1.x (``nnunet-synth fit controlnet``).

The structure is that of diffusers' ``examples/controlnet/train_controlnet.py``:
``ControlNetModel.from_unet`` (or ``--init-controlnet DIR``, so the same command
does DiffBoost's medical pre-training and its task fine-tune), only the
ControlNet trained; the UNet, VAE and text encoder frozen (in the half type
under mixed precision); conditioning images in [0, 1]; caption dropout
(``--caption-dropout``, the example's ``proportion_empty_prompts``);
checkpoints with a total limit and resume; EMA, Min-SNR, offset noise,
gradient checkpointing, 8-bit Adam.

Each training image is the whole case, padded to a square and resized to
``--resolution`` (``sd.framing.full_frame``), flipped left-right at random
together with its conditioning map: the edge map of the framed image plus its
mask's boundary (``controlnet.edges``). Grayscale is repeated to RGB.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nnunet_synth import __version__
from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import TrainingCase
from nnunet_synth.generators.controlnet import folder
from nnunet_synth.generators.controlnet.edges import EdgeDetector, edge_rule
from nnunet_synth.generators.controlnet.prompts import training_captions
from nnunet_synth.generators.controlnet.settings import ControlNetFitOptions
from nnunet_synth.generators.sd.framing import full_frame, to_model
from nnunet_synth.generators.sd.loading import encode_prompts
from nnunet_synth.generators.sd.settings import RESUMABLE_CHANGES
from nnunet_synth.generators.sd.training import (check_2d_cases, check_fit_options, diffusion_loss, encode_latents,
                                                 noise_like, prepare_training, resumed_steps, run_steps, save_trained,
                                                 start_fine_tune, target_of)

CONDITIONING_CHANNELS = (16, 32, 96, 256)  # diffusers' default conditioning embedding, for a VAE that downsamples 8x


def framed(image: np.ndarray, seg: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB in [-1, 1] (3, R, R), mask (R, R)): the whole case padded to a square and resized."""
    frame = full_frame(seg.shape, resolution)
    rgb = to_model(image, frame, order=1, fill=-1.0).astype(np.float32)
    if rgb.shape[0] == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    return np.clip(rgb, -1, 1), to_model(seg, frame, order=0)


def conditioning_channels(vae) -> tuple[int, ...]:
    """The conditioning embedding must downsample exactly as the VAE does (2 ** (n - 1) for n entries)."""
    n = len(vae.config.block_out_channels)
    if n > len(CONDITIONING_CHANNELS):
        raise SynthError(f"a VAE with {n} levels is not a Stable Diffusion 1.x VAE")
    return CONDITIONING_CHANNELS[:n]


def dataset_case_ids(model_dir: Path, fallback: list[str]) -> list[str]:
    """Every case of the real dataset (a prompt CSV may name cases outside this fold's training cases)."""
    from nnunet_synth.generators.training_record import read_training_record
    from nnunet_synth.raw_dataset import RawDataset

    try:
        return RawDataset.open(read_training_record(Path(model_dir), "controlnet")["dataset"]).case_ids()
    except SynthError:
        return fallback


def check_compatible(controlnet, unet, where: str) -> None:
    """A ControlNet must match the UNet it steers: channels per level, text width and input channels."""
    mismatches = [f"{key} {getattr(controlnet.config, key)} vs {getattr(unet.config, key)}"
                  for key in ("block_out_channels", "cross_attention_dim", "in_channels", "layers_per_block")
                  if list(np.atleast_1d(getattr(controlnet.config, key))) != list(np.atleast_1d(getattr(unet.config, key)))]
    if mismatches:
        raise SynthError(f"{where}: this ControlNet does not match the UNet of the SD folder "
                         f"({'; '.join(mismatches)}); use a ControlNet made for this base model")


def build_config(cases, labels, options: ControlNetFitOptions, pretrained: str, captions: dict, rule: dict) -> dict:
    return {
        "_class_name": "ControlNetGenerator",
        "format_version": folder.FORMAT_VERSION,
        "nnunet_synth_version": __version__,
        "pretrained": pretrained,
        "image_channels": int(cases[0].image.shape[0]),
        "labels": [int(v) for v in sorted(labels)],
        "resolution": options.resolution,
        "edge_rule": rule,
        "prompt": options.prompt,
        "captions": captions,
        "settings": asdict(options),
    }


class FramedCases:
    """The training cases at model resolution, with their conditioning maps (computed once)."""

    def __init__(self, cases: list[TrainingCase], resolution: int, detector: EdgeDetector, captions: dict):
        self.images, self.conditions, self.captions = [], [], []
        for case in cases:
            rgb, mask = framed(case.image, case.seg, resolution)
            self.images.append(rgb)
            self.conditions.append(detector((rgb + 1) / 2, mask))
            self.captions.append(captions[case.case_id])

    def batch(self, rng: np.random.Generator, batch_size: int, caption_dropout: float):
        """(images (B, 3, R, R) in [-1, 1], conditions (B, 3, R, R) in [0, 1], captions)."""
        images, conditions, captions = [], [], []
        for _ in range(batch_size):
            i = int(rng.integers(len(self.images)))
            image, condition = self.images[i], self.conditions[i]
            if rng.random() < 0.5:
                image, condition = image[..., ::-1], condition[..., ::-1]
            images.append(image)
            conditions.append(condition)
            captions.append("" if rng.random() < caption_dropout else self.captions[i])
        return (torch.from_numpy(np.ascontiguousarray(np.stack(images))),
                torch.from_numpy(np.ascontiguousarray(np.stack(conditions))), captions)


def fit_model(cases: list[TrainingCase], labels: list[int], model_dir: Path, options: ControlNetFitOptions) -> None:
    from diffusers import ControlNetModel, DDPMScheduler

    model_dir = Path(model_dir)
    labels = sorted(int(v) for v in labels)
    check_fit_options(options, "controlnet")
    if not 0 <= options.caption_dropout <= 1:
        raise SynthError(f"--caption-dropout must be in [0, 1], got {options.caption_dropout}")
    check_2d_cases(cases, labels, "controlnet")
    ids = [c.case_id for c in cases]
    captions = training_captions(ids, options.prompt, options.prompt_csv, dataset_case_ids(model_dir, ids))
    rule = edge_rule(options.edge, options.edge_sigma, options.hed_model)
    source, local_only, accelerator, weight_dtype, parts, unet = start_fine_tune(options)
    if unet.config.in_channels != 4:
        raise SynthError(f"{source}/unet has {unet.config.in_channels} input channels; the ControlNet steers the "
                         f"4-channel UNet of a text-to-image SD 1.x checkpoint, not an inpainting one")
    if options.init_controlnet:
        init = Path(options.init_controlnet)
        if not (init / "config.json").is_file():
            raise SynthError(f"--init-controlnet {init}: not a ControlNet folder (no config.json)")
        controlnet = ControlNetModel.from_pretrained(str(init), local_files_only=True)
        check_compatible(controlnet, unet, f"--init-controlnet {init}")
    else:
        # The conditioning embedding's new layers are initialised from --fit-seed (a resumed run must start
        # from the same weights); the global random stream is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            controlnet = ControlNetModel.from_unet(unet,
                                                   conditioning_embedding_out_channels=conditioning_channels(parts.vae))
    config = build_config(cases, labels, options, str(source), captions, rule)
    config["steps_trained"] = resumed_steps(model_dir, config, folder.read_config, RESUMABLE_CHANGES)
    if accelerator.is_main_process:
        folder.write_config(model_dir, config)
    data = FramedCases(cases, options.resolution, EdgeDetector(rule), captions)

    noise_scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", local_files_only=local_only)
    vae, text_encoder = parts.vae, parts.text_encoder
    for frozen in (vae, text_encoder, unet):
        frozen.requires_grad_(False)
    if weight_dtype != torch.float32:  # the frozen parts in the half type; the trained ControlNet stays fp32
        vae, text_encoder = vae.to(dtype=weight_dtype), text_encoder.to(dtype=weight_dtype)
        unet = unet.to(dtype=weight_dtype)
    unet.to(accelerator.device)
    texts = sorted(set(captions.values()) | {""})
    embeddings = dict(zip(texts, encode_prompts(parts.tokenizer, text_encoder, texts, accelerator.device)))
    if options.gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
        unet.enable_gradient_checkpointing()
    controlnet, optimizer, lr_scheduler, ema = prepare_training(accelerator, controlnet, options)

    def loss_of(rng, generator):
        images, conditions, batch_captions = data.batch(rng, options.batch_size, options.caption_dropout)
        images = images.to(accelerator.device, weight_dtype)
        conditions = conditions.to(accelerator.device, torch.float32)
        hidden = torch.stack([embeddings[c] for c in batch_captions])
        with torch.no_grad():
            latents = encode_latents(vae, images, generator)
            noise = noise_like(latents, generator, options.noise_offset)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(latents),),
                                      generator=generator).to(accelerator.device)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            target = target_of(noise_scheduler, latents, noise, timesteps)
        down, mid = controlnet(noisy.float(), timesteps, encoder_hidden_states=hidden.float(),
                               controlnet_cond=conditions, return_dict=False)
        predicted = unet(noisy, timesteps, encoder_hidden_states=hidden,
                         down_block_additional_residuals=[r.to(weight_dtype) for r in down],
                         mid_block_additional_residual=mid.to(weight_dtype)).sample
        return diffusion_loss(predicted, target, timesteps, noise_scheduler, options.snr_gamma)

    run_steps(accelerator, controlnet, optimizer, lr_scheduler, ema, model_dir, options, loss_of,
              f"controlnet fit {model_dir.name}")
    save_trained(accelerator, controlnet, ema, model_dir, folder.CONTROLNET_DIR, config, folder.write_config,
                 options.train_steps)

