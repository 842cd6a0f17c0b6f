"""Pieces of the Stable Diffusion fine-tuning loops (sd-inpaint, controlnet), after diffusers' training examples."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from nnunet_synth.atomic import give_files_the_umask_mode
from nnunet_synth.errors import SynthError
from nnunet_synth.labels import check_label_values



def mixed_precision(setting: str, on_cpu: bool) -> str:
    """accelerate's mixed precision for ``--mixed-precision`` (auto: fp16 on a GPU, none on the CPU)."""
    if setting == "auto":
        return "no" if on_cpu else "fp16"
    if setting == "fp16" and on_cpu:
        raise SynthError("--mixed-precision fp16 needs a GPU; use bf16 or no on the CPU")
    return setting


def half_type(accelerator) -> torch.dtype:
    """The type the frozen models run in: the mixed-precision type, else float32."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def make_optimizer(parameters, learning_rate: float, use_8bit_adam: bool):
    """AdamW, or bitsandbytes' 8-bit AdamW."""
    if not use_8bit_adam:
        return torch.optim.AdamW(parameters, lr=learning_rate)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise SynthError("--use-8bit-adam needs bitsandbytes: pip install bitsandbytes") from None
    return bnb.optim.AdamW8bit(parameters, lr=learning_rate)


def check_source_case(source, image_channels: int, generator: str) -> None:
    """At generation: a 2D source case with the channels the model was trained on."""
    if source.image.ndim != 3:
        raise SynthError(f"case {source.case_id} is {source.image.ndim - 1}D; {generator} is a 2D generator")
    if source.image.shape[0] != image_channels:
        raise SynthError(f"case {source.case_id} has {source.image.shape[0]} channel(s), the model was trained "
                         f"on {image_channels}")


def check_2d_cases(cases: list, labels: list[int], generator: str) -> None:
    """Stable Diffusion generators take 2D grayscale or RGB cases with matching masks."""
    if not cases:
        raise SynthError(f"{generator} fit got no training cases")
    channels = cases[0].image.shape[0]
    for case in cases:
        if case.image.ndim != 3:
            raise SynthError(f"training case {case.case_id} is {case.image.ndim - 1}D; {generator} is a 2D "
                             f"generator (Stable Diffusion works on 2D images)")
        if case.image.shape[0] != channels or channels not in (1, 3):
            raise SynthError(f"training case {case.case_id} has {case.image.shape[0]} channel(s); {generator} takes "
                             f"grayscale (1) or RGB (3) images, the same for every case")
        if case.seg.shape != case.image.shape[1:]:
            raise SynthError(f"training case {case.case_id}: mask shape {case.seg.shape} differs from image shape "
                             f"{case.image.shape[1:]}")
        check_label_values(case.seg, labels, f"training case {case.case_id}", allowed_from="the dataset")


def check_fit_options(options, generator: str) -> None:
    """The shared options' checks (``SDFitOptions``), before anything is loaded."""
    if not options.pretrained:
        raise SynthError(f"{generator} needs --pretrained SD_DIR, a local Stable Diffusion 1.x folder")
    for name in ("train_steps", "batch_size", "gradient_accumulation_steps", "checkpointing_steps",
                 "checkpoints_total_limit"):
        if getattr(options, name) < 1:
            raise SynthError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(options, name)}")


def start_fine_tune(options):
    """The accelerator, the frozen text encoder, tokenizer and VAE, and the base UNet, for ``options`` (SDFitOptions).

    Returns ``(source, local_only, accelerator, half, parts, unet)``: the resolved SD folder (or hub id),
    whether it is read with ``local_files_only``, the half type of the frozen models, the loaded parts.
    """
    from accelerate import Accelerator
    from diffusers import UNet2DConditionModel

    from nnunet_synth.generators.sd.loading import check_resolution, load_sd_components, resolve_pretrained

    source, local_only = resolve_pretrained(options.pretrained, options.allow_download)
    on_cpu = options.cpu or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=on_cpu, mixed_precision=mixed_precision(options.mixed_precision, on_cpu),
                              gradient_accumulation_steps=options.gradient_accumulation_steps)
    parts = load_sd_components(source, allow_download=not local_only, device=str(accelerator.device),
                               parts=("tokenizer", "text_encoder", "vae"))
    check_resolution(parts.vae, options.resolution, "--resolution")
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", local_files_only=local_only)
    return source, local_only, accelerator, half_type(accelerator), parts, unet


def resumed_steps(model_dir: Path, config: dict, read_config, resumable: set[str]) -> int:
    """Steps already trained in ``model_dir``; a folder trained with other (non-resumable) settings is refused."""
    if not (Path(model_dir) / "config.json").is_file():
        return 0
    saved = read_config(model_dir, must_be_trained=False)
    old, new = _comparable(saved, resumable), _comparable(config, resumable)
    if old != new:
        key = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
        raise SynthError(f"model folder {model_dir} holds a model trained with different settings ({key}: "
                         f"{old.get(key)} there, {new.get(key)} now); use another -o folder or delete it")
    return int(saved.get("steps_trained", 0))


def _comparable(config: dict, resumable: set[str]) -> dict:
    out = {k: v for k, v in config.items() if k not in ("nnunet_synth_version", "steps_trained", "settings",
                                                      "pretrained")}
    out["settings"] = {k: v for k, v in config["settings"].items() if k not in resumable}
    return json.loads(json.dumps(out))


def encode_latents(vae, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Scaled VAE latents, sampled with ``generator`` (a CPU generator: the draw does not depend on the device)."""
    dist = vae.encode(images).latent_dist
    eps = torch.randn(dist.mean.shape, generator=generator).to(dist.mean)
    return (dist.mean + dist.std * eps) * vae.config.scaling_factor


def noise_like(latents: torch.Tensor, generator: torch.Generator, offset: float) -> torch.Tensor:
    """Gaussian noise, plus offset noise (one value per sample and channel) when ``offset`` > 0."""
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    if offset:
        noise = noise + offset * torch.randn(latents.shape[:2] + (1, 1), generator=generator).to(latents)
    return noise


def target_of(noise_scheduler, latents, noise, timesteps):
    """What the UNet learns to predict: the noise, or the velocity for v-prediction schedules."""
    if noise_scheduler.config.prediction_type == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    return noise


def diffusion_loss(predicted, target, timesteps, noise_scheduler, snr_gamma: float | None, pixel_weights=None):
    """MSE, or with Min-SNR weighting (Hang et al. 2023) as in diffusers' train_text_to_image.py.

    ``pixel_weights`` (B, 1, h, w) at latent resolution weight each latent pixel's squared
    error (MedDiff-FT's masked loss); each sample's error is then the weighted mean, so
    weights of 1 everywhere give the plain loss.
    """
    from diffusers.training_utils import compute_snr

    predicted, target = predicted.float(), target.float()
    if snr_gamma is None and pixel_weights is None:
        return F.mse_loss(predicted, target)
    squared = F.mse_loss(predicted, target, reduction="none")
    dims = list(range(1, predicted.ndim))
    if pixel_weights is None:
        per_sample = squared.mean(dim=dims)
    else:
        weights = pixel_weights.float().expand_as(squared)
        per_sample = (squared * weights).sum(dim=dims) / weights.sum(dim=dims).clamp_min(1e-8)
    if snr_gamma is None:
        return per_sample.mean()
    snr = compute_snr(noise_scheduler, timesteps)
    weights = torch.stack([snr, snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
    weights = weights / (snr + 1) if noise_scheduler.config.prediction_type == "v_prediction" else weights / snr
    return (per_sample * weights).mean()


def save_model_subfolder(model_dir: Path, name: str, model) -> None:
    """``model_dir/name`` (diffusers ``save_pretrained``) replaced in one rename: a kill never leaves half a model."""
    tmp, final = Path(model_dir) / f".{name}-tmp", Path(model_dir) / name
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp), safe_serialization=True)
    give_files_the_umask_mode(tmp)  # safetensors writes 0600; the other outputs are 0644
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def prepare_training(accelerator, model, options):
    """AdamW (or 8-bit AdamW) and a constant learning rate after warm-up for ``model``, through ``accelerator``.

    Returns ``(model, optimizer, lr_scheduler, ema)``; ``ema`` is None without ``--use-ema``.
    """
    from diffusers.optimization import get_scheduler

    model.train()
    optimizer = make_optimizer(model.parameters(), options.learning_rate, options.use_8bit_adam)
    lr_scheduler = get_scheduler("constant_with_warmup", optimizer,
                                 num_warmup_steps=options.lr_warmup_steps * accelerator.num_processes)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    return model, optimizer, lr_scheduler, prepare_ema(accelerator, model, options.use_ema, options.ema_decay)


def prepare_ema(accelerator, model, use_ema: bool, decay: float):
    """diffusers' EMAModel of ``model`` (registered for checkpointing), or None."""
    if not use_ema:
        return None
    from diffusers.training_utils import EMAModel

    unwrapped = accelerator.unwrap_model(model)
    ema = EMAModel(unwrapped.parameters(), decay=decay, model_cls=type(unwrapped), model_config=unwrapped.config)
    ema.to(accelerator.device)
    accelerator.register_for_checkpointing(ema)
    return ema


def run_steps(accelerator, model, optimizer, lr_scheduler, ema, model_dir: Path, options, loss_of, desc: str) -> None:
    """The optimisation steps from the newest checkpoint (if any) to ``options.train_steps``.

    ``loss_of(rng, generator)`` computes one micro-batch's loss; every random draw of
    step n, micro-batch m comes from ``rng`` / ``generator`` seeded with
    ``(options.seed, n, m, process)``, so a resumed run repeats an uninterrupted one.
    Checkpoints every ``options.checkpointing_steps`` and at the end; prints the time per
    step (and the peak GPU memory on CUDA) at the end.
    """
    from tqdm import tqdm

    from nnunet_synth.generators.sd import checkpoints
    from nnunet_synth.generators.sd.usage import Usage

    checkpoint, start_step = checkpoints.latest_checkpoint(model_dir)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        if ema is not None:
            ema.to(accelerator.device)
    if start_step > options.train_steps:
        raise SynthError(f"model folder {model_dir} is already trained for {start_step} steps, more than "
                         f"--train-steps {options.train_steps}; use another -o folder to train a shorter model")
    usage = Usage(accelerator.device, "step")
    progress = tqdm(range(start_step, options.train_steps), initial=start_step, total=options.train_steps,
                    desc=desc, disable=not accelerator.is_local_main_process)
    for step in progress:
        with usage.measure():
            loss = _one_step(accelerator, model, optimizer, lr_scheduler, options, loss_of, step)
        if ema is not None:
            ema.step(accelerator.unwrap_model(model).parameters())
        progress.set_postfix(loss=f"{loss:.4f}")
        done = step + 1
        if done % options.checkpointing_steps == 0 or done == options.train_steps:
            checkpoints.save_checkpoint(accelerator, model_dir, done, options.checkpoints_total_limit)
    if usage.line() and accelerator.is_local_main_process:
        print(f"{desc}: {usage.line()}", flush=True)


def _one_step(accelerator, model, optimizer, lr_scheduler, options, loss_of, step: int) -> float:
    """One optimisation step over ``options.gradient_accumulation_steps`` micro-batches; the last one's loss."""
    import numpy as np

    for micro in range(options.gradient_accumulation_steps):
        rng = np.random.default_rng([options.seed, step, micro, accelerator.process_index])
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        with accelerator.accumulate(model):
            loss = loss_of(rng, generator)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    return loss.item()


def save_trained(accelerator, model, ema, model_dir: Path, subfolder: str, config: dict, write_config,
                 train_steps: int) -> None:
    """The trained weights (the EMA's, if kept) into ``model_dir/subfolder``, then ``steps_trained`` in config.json."""
    if config["steps_trained"] == train_steps and (Path(model_dir) / subfolder / "config.json").is_file():
        return  # already complete: a rerun with the same settings has nothing to do
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        if ema is not None:
            ema.store(final.parameters())
            ema.copy_to(final.parameters())
        save_model_subfolder(model_dir, subfolder, final)
        if ema is not None:
            ema.restore(final.parameters())
        config["steps_trained"] = train_steps
        write_config(model_dir, config)
    accelerator.wait_for_everyone()
