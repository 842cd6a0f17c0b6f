"""``nnunet-synth fit meddiff-ft``: the lesion fine-tune, the mask DDPM and the background fine-tune.

1. **Lesion fine-tune (masked loss).** Stable Diffusion's 9-channel inpainting
   UNet, trained on lesion-centred crops (sd-inpaint's ``LesionCrops``) with
   the trigger-word prompt. The UNet sees the lesion as its inpainting mask
   and the crop with the lesion blanked, as diffusers' inpainting pipeline
   feeds it. The noise-prediction error is weighted per latent pixel: 1 on
   the lesion (the mask max-pooled to latent resolution), ``outside_weight``
   elsewhere (``masked_loss``).
2. **Mask DDPM.** MONAI's DiffusionModelUNet on the training lesions' shapes
   (each lesion's square window, resized to ``mask_resolution``, flipped and
   rotated by multiples of 90 degrees), with diffusers' DDPMScheduler.
3. **Background fine-tune (inverted masks).** The same fine-tune with the
   masks inverted: the UNet inpaints everything but the lesion and the loss
   weights the non-lesion pixels, so it learns healthy tissue only. It repairs
   the lesions of real images at generation time.

Each part uses the shared SD training loop (``sd.training.run_steps``:
accelerate, checkpoints with a total limit, resume, seeded draws) in its own
folder, can be given ready (``--lesion-model``, ``--mask-model``,
``--background-model``) and, for 3 and 4, skipped.
"""
from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from nnunet_synth import __version__
from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import TrainingCase
from nnunet_synth.generators.meddiff_ft import folder
from nnunet_synth.generators.meddiff_ft.settings import RESUMABLE_FIT_CHANGES, MedDiffFTFitOptions
from nnunet_synth.generators.sd.settings import RESUMABLE_CHANGES

REFERENCE_SIDE = 224   # side of the stored reference windows (DINOv2's input size)
MASK_CONTEXT = 1.25    # a mask canvas is this times its lesion's larger side


def masked_loss(predicted, target, timesteps, noise_scheduler, snr_gamma, lesion, outside_weight: float):
    """The diffusion loss weighted by ``lesion`` (B, 1, h, w) in {0, 1} at latent resolution.

    Weight 1 on the lesion and ``outside_weight`` elsewhere: 0 trains the lesion only, 1 is plain MSE.
    """
    from nnunet_synth.generators.sd.training import diffusion_loss

    weights = lesion + outside_weight * (1 - lesion)
    return diffusion_loss(predicted, target, timesteps, noise_scheduler, snr_gamma, pixel_weights=weights)


def latent_mask(masks: torch.Tensor, latent_shape) -> torch.Tensor:
    """(B, 1, H, W) {0, 1} -> (B, 1, h, w): a latent pixel belongs to the mask if any of its pixels does."""
    import torch.nn.functional as F

    return F.adaptive_max_pool2d(masks.float(), tuple(latent_shape))


def check_options(options: MedDiffFTFitOptions) -> None:
    from nnunet_synth.generators.sd.training import check_fit_options

    check_fit_options(options, "meddiff-ft")
    if options.context < 1:
        raise SynthError(f"--context must be at least 1 (the crop holds its lesion), got {options.context}")
    if not 0 <= options.outside_weight <= 1:
        raise SynthError(f"--outside-weight must lie in [0, 1], got {options.outside_weight}")
    for name in ("mask_steps", "background_steps", "mask_batch_size"):
        if getattr(options, name) < 1:
            raise SynthError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(options, name)}")
    if options.mask_resolution < 8 or options.mask_resolution % 2 ** (len(options.mask_channels) - 1):
        raise SynthError(f"--mask-resolution {options.mask_resolution} must be at least 8 and a multiple of "
                         f"{2 ** (len(options.mask_channels) - 1)} (the mask UNet halves it "
                         f"{len(options.mask_channels) - 1} times)")
    if options.mask_model and options.no_mask_model:
        raise SynthError("--mask-model and --no-mask-model contradict each other; give one")
    if options.background_model and options.no_background_model:
        raise SynthError("--background-model and --no-background-model contradict each other; give one")
    pretrained_unet = Path(options.pretrained) / "unet" / "config.json"
    if pretrained_unet.is_file() and not (options.lesion_model and (options.background_model
                                                                     or options.no_background_model)):
        _check_unet_folder(pretrained_unet.parent, "--pretrained")
    for name in ("lesion_model", "background_model"):
        path = getattr(options, name)
        if path:
            _check_unet_folder(Path(path), f"--{name.replace('_', '-')}")
    if options.mask_model:
        folder.read_mask_config(Path(options.mask_model))


def _check_unet_folder(path: Path, option: str) -> None:
    from nnunet_synth.atomic import read_json

    config = read_json(path / "config.json", f"{option} must be a diffusers UNet2DConditionModel folder")
    if config.get("_class_name") != "UNet2DConditionModel" or config.get("in_channels") != 9:
        raise SynthError(f"{option} {path}: expected a 9-channel UNet2DConditionModel folder (an SD inpainting "
                         f"UNet), found {config.get('_class_name')} with {config.get('in_channels')} input channels")


def fit_model(cases: list[TrainingCase], labels: list[int], model_dir: Path, options: MedDiffFTFitOptions) -> None:
    from scipy import ndimage

    from nnunet_synth.generators.sd.placement import BANK_FILE, LesionBank
    from nnunet_synth.generators.sd.training import check_2d_cases, resumed_steps
    from nnunet_synth.generators.sd_inpaint.train import LesionCrops

    model_dir = Path(model_dir)
    labels = sorted(int(v) for v in labels)
    check_options(options)
    check_2d_cases(cases, labels, "meddiff-ft")
    if options.label not in labels or options.label == 0:
        raise SynthError(f"--label {options.label} is not a foreground label of the dataset (labels {labels})")
    crops = LesionCrops(cases, options.label, options.resolution, options.context, mask_dilation=0)
    bank = LesionBank.from_cases(cases, options.label)
    radius = max(float(ndimage.distance_transform_edt(np.pad(e.crop, 1)).max()) for e in bank.entries)
    healthy = sorted(c.case_id for c in cases if not (c.seg == options.label).any())
    parts = {"lesion": True, "mask": not options.no_mask_model, "background": not options.no_background_model}
    config = {
        "_class_name": folder.FOLDER.class_name, "format_version": folder.FORMAT_VERSION,
        "nnunet_synth_version": __version__, "pretrained": str(Path(options.pretrained).resolve())
        if Path(options.pretrained).is_dir() else options.pretrained,
        "image_channels": int(cases[0].image.shape[0]), "labels": labels, "label": options.label,
        "resolution": options.resolution, "context": options.context, "prompt": options.prompt,
        "background_prompt": options.background_prompt, "parts": parts, "healthy_training_cases": healthy,
        "largest_lesion_radius_px": radius, "settings": asdict(options),
    }
    resumable = RESUMABLE_CHANGES | RESUMABLE_FIT_CHANGES | {"lesion_model", "mask_model", "background_model"}
    config["steps_trained"] = resumed_steps(model_dir, config, folder.read_config, resumable)
    folder.write_config(model_dir, config)
    bank.save(model_dir / BANK_FILE)
    _save_references(crops, model_dir / folder.REFERENCES_FILE)

    if options.lesion_model:
        _copy_unet(Path(options.lesion_model), model_dir / folder.UNET_DIR)
        config["steps_trained"] = options.train_steps
        folder.write_config(model_dir, config)
    else:
        fine_tune(crops, options, model_dir, config, folder.write_config, invert=False, prompt=options.prompt,
                  desc=f"meddiff-ft lesion fit {model_dir.name}")
    if parts["mask"]:
        if options.mask_model:
            _copy_tree(Path(options.mask_model), model_dir / folder.MASK_DIR)
        else:
            from nnunet_synth.generators.meddiff_ft.mask_model import train_mask_ddpm

            train_mask_ddpm(cases, options, model_dir / folder.MASK_DIR)
    if parts["background"]:
        background_dir = model_dir / folder.BACKGROUND_DIR
        if options.background_model:
            _copy_unet(Path(options.background_model), background_dir / folder.UNET_DIR)
            background_config = _background_config(options)
            background_config["steps_trained"] = options.background_steps
            folder.BACKGROUND.write_config(background_dir, background_config)
        else:
            background_options = replace(options, train_steps=options.background_steps)
            background_config = _background_config(options)
            background_config["steps_trained"] = resumed_steps(background_dir, background_config,
                                                               folder.BACKGROUND.read_config, resumable)
            background_dir.mkdir(exist_ok=True)
            folder.BACKGROUND.write_config(background_dir, background_config)
            fine_tune(crops, background_options, background_dir, background_config, folder.BACKGROUND.write_config,
                      invert=True, prompt=options.background_prompt, desc=f"meddiff-ft background fit {model_dir.name}")


def _background_config(options: MedDiffFTFitOptions) -> dict:
    return {"_class_name": folder.BACKGROUND.class_name, "format_version": folder.FORMAT_VERSION,
            "nnunet_synth_version": __version__, "pretrained": options.pretrained, "image_channels": None,
            "labels": None, "resolution": options.resolution, "prompt": options.background_prompt,
            "settings": asdict(options)}


def fine_tune(crops, options: MedDiffFTFitOptions, part_dir: Path, config: dict, write_config, *, invert: bool,
              prompt: str, desc: str) -> None:
    """One masked fine-tune of the 9-channel inpainting UNet into ``part_dir/unet`` (``invert``: healthy tissue)."""
    from diffusers import DDPMScheduler

    from nnunet_synth.generators.sd.loading import encode_prompts
    from nnunet_synth.generators.sd.training import (encode_latents, noise_like, prepare_training, run_steps,
                                                     save_trained, start_fine_tune, target_of)

    if config["steps_trained"] == options.train_steps and (part_dir / folder.UNET_DIR / "config.json").is_file():
        return
    source, local_only, accelerator, weight_dtype, parts, unet = start_fine_tune(options)
    if unet.config.in_channels != 9:
        raise SynthError(f"{source}/unet has {unet.config.in_channels} input channels; meddiff-ft fine-tunes the "
                         f"9-channel UNet of a Stable Diffusion inpainting checkpoint (e.g. "
                         f"stable-diffusion-v1-5/stable-diffusion-inpainting); a 4-channel SD 1.x UNet does not "
                         f"see the mask")
    noise_scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", local_files_only=local_only)
    vae, text_encoder = parts.vae, parts.text_encoder
    if weight_dtype != torch.float32:
        vae, text_encoder = vae.to(dtype=weight_dtype), text_encoder.to(dtype=weight_dtype)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    prompt_embeds = encode_prompts(parts.tokenizer, text_encoder, [prompt], accelerator.device)
    if options.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet, optimizer, lr_scheduler, ema = prepare_training(accelerator, unet, options)
    # The background model never learns the lesion: its weight there is 0, whatever --outside-weight says.
    outside_weight = 0.0 if invert else options.outside_weight

    def loss_of(rng, generator):
        images, lesions = crops.batch(rng, options.batch_size)
        images, lesions = images.to(accelerator.device, weight_dtype), lesions.to(accelerator.device)
        with torch.no_grad():
            latents = encode_latents(vae, images, generator)
            small = latent_mask(lesions, latents.shape[-2:])
            region = 1 - small if invert else small           # what the UNet inpaints and the loss weights
            pixels = torch.nn.functional.interpolate(region, size=images.shape[-2:], mode="nearest")
            noise = noise_like(latents, generator, options.noise_offset)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(latents),),
                                      generator=generator).to(accelerator.device)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            masked = encode_latents(vae, images * (pixels < 0.5).to(images.dtype), generator)
            inputs = torch.cat([noisy, region.to(latents), masked], dim=1)
            target = target_of(noise_scheduler, latents, noise, timesteps)
        hidden = prompt_embeds.expand(len(latents), -1, -1)
        predicted = unet(inputs.float(), timesteps, hidden.float()).sample
        return masked_loss(predicted, target, timesteps, noise_scheduler, options.snr_gamma, region.float(),
                           outside_weight)

    run_steps(accelerator, unet, optimizer, lr_scheduler, ema, part_dir, options, loss_of, desc)
    save_trained(accelerator, unet, ema, part_dir, folder.UNET_DIR, config, write_config, options.train_steps)
    accelerator.free_memory()


def _save_references(crops, path: Path) -> None:
    """Every training lesion's window (no jitter), uint8 RGB at REFERENCE_SIDE: the filter's real references."""
    from nnunet_synth.generators.sd.framing import square_box_around, to_model
    from nnunet_synth.generators.sd_inpaint.settings import MIN_WINDOW_PX

    windows, case_ids = [], []
    for index, _, bbox in crops.lesions:
        case = crops.cases[index]
        frame = square_box_around(bbox, case.seg.shape, crops.context, min(MIN_WINDOW_PX, max(case.seg.shape)),
                                  resolution=REFERENCE_SIDE)
        window = to_model(case.image, frame, order=1, fill=-1.0)
        if window.shape[0] == 1:
            window = np.repeat(window, 3, axis=0)
        windows.append(np.round((np.clip(window, -1, 1) + 1) * 127.5).astype(np.uint8))
        case_ids.append(case.case_id)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        np.savez_compressed(f, windows=np.stack(windows), case_ids=np.array(case_ids, dtype=str))
    partial.replace(path)


def _copy_unet(source: Path, target: Path) -> None:
    _check_unet_folder(source, str(source))
    _copy_tree(source, target)


def _copy_tree(source: Path, target: Path) -> None:
    """A ready part copied in (so the model folder stays self-contained), replaced in one rename."""
    tmp = target.with_name(f".{target.name}-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("checkpoints", "checkpoint-*"))
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
