"""Training the patch-wise DDPM with Hugging Face accelerate.

Each step draws a batch of random patches (a fraction of them centred on a
foreground voxel), noises them with diffusers' DDPMScheduler at random
timesteps, and fits the network's noise prediction with an MSE loss. Memory
therefore depends on the patch size only, never on the image size.

Every random draw of step ``n`` comes from generators seeded with
``(seed, n, process index)``, so a run resumed from a checkpoint takes exactly
the same steps as an uninterrupted run. The learning rate follows diffusers'
``get_scheduler`` (constant by default; warm-up, cosine or linear decay as
options), stepped once per optimisation step and saved with the checkpoint.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from nnunet_synth import __version__
from nnunet_synth.atomic import give_files_the_umask_mode, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import TrainingCase
from nnunet_synth.generators.patch_ddpm import folder
from nnunet_synth.generators.patch_ddpm.network import build_network, coordinates, network_kwargs, one_hot
from nnunet_synth.generators.patch_ddpm.settings import (LR_SCHEDULES_OVER_TRAIN_STEPS, FitSettings,
                                                         PatchDDPMFitOptions, resolve_fit_settings)
from nnunet_synth.labels import check_label_values

# Settings that may change between a run and its resumption; everything else
# in config.json must match, or the checkpoint would belong to another model.
# train_steps is one of them unless the learning-rate schedule is laid out over it.
RESUMABLE_CHANGES = {"train_steps", "checkpoint_every", "mixed_precision"}
# Foreground positions kept per case for foreground-centred patches; a sample
# is enough and bounds memory on large 3D label maps.
MAX_FOREGROUND_POSITIONS = 100_000


def ddpm_scheduler_config(num_train_timesteps: int) -> dict:
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="linear",
        prediction_type="epsilon",
        # Images live in [-1, 1]; clipping the predicted clean image keeps
        # DDPM/DDIM sampling inside that range.
        clip_sample=True,
        clip_sample_range=1.0,
        # "trailing" spacing includes the last training timestep, which matters
        # when sampling with few steps.
        timestep_spacing="trailing",
    )
    return json.loads(scheduler.to_json_string())


def build_config(cases: list[TrainingCase], labels: list[int], settings: FitSettings) -> dict:
    spatial_dims = cases[0].image.ndim - 1
    image_channels = cases[0].image.shape[0]
    foreground = [int(v) for v in sorted(labels) if v != 0]
    return {
        "_class_name": "PatchDDPMGenerator",
        "format_version": folder.FORMAT_VERSION,
        "nnunet_synth_version": __version__,
        "spatial_dims": spatial_dims,
        "image_channels": image_channels,
        "labels": [int(v) for v in sorted(labels)],
        "mask_channels": "one-hot of the foreground labels (background has no channel)",
        "coordinate_channels": "global voxel index per axis scaled to [-1, 1]",
        "patch_size": list(settings.patch_size),
        "network": network_kwargs(spatial_dims, image_channels, len(foreground), settings.channels,
                                  settings.res_blocks),
        "scheduler": ddpm_scheduler_config(settings.num_train_timesteps),
        "settings": settings.to_json(),
    }


def _resumable_changes(settings: dict) -> set[str]:
    if settings.get("lr_scheduler") in LR_SCHEDULES_OVER_TRAIN_STEPS:
        return RESUMABLE_CHANGES - {"train_steps"}
    return RESUMABLE_CHANGES


def _comparable(config: dict) -> dict:
    """The entries of a config that define the model, flattened to ``section.key`` where nested."""
    out = {k: v for k, v in config.items()
           if k not in ("nnunet_synth_version", "steps_trained", "settings", "network", "scheduler")}
    for section in ("network", "scheduler"):
        out.update({f"{section}.{k}": v for k, v in config[section].items() if not k.startswith("_")})
    resumable = _resumable_changes(config["settings"])
    out.update({f"settings.{k}": v for k, v in config["settings"].items() if k not in resumable})
    return json.loads(json.dumps(out))


def _check_same_model(model_dir: Path, saved: dict, config: dict) -> None:
    old, new = _comparable(saved), _comparable(config)
    if old == new:
        return
    key = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
    why = ""
    if key == "settings.train_steps":
        why = (f" (--lr-scheduler {config['settings']['lr_scheduler']} is laid out over --train-steps, so a model "
               f"trained with it cannot be trained further)")
    raise SynthError(f"model folder {model_dir} holds a model trained with different settings ({key}: "
                     f"{old.get(key)} there, {new.get(key)} now{why}); use another -o folder or delete it")


def _check_cases(cases: list[TrainingCase], labels: list[int]) -> None:
    if not cases:
        raise SynthError("patch-ddpm fit got no training cases")
    first = cases[0]
    for case in cases:
        if case.image.ndim != first.image.ndim or case.image.shape[0] != first.image.shape[0]:
            raise SynthError(f"training case {case.case_id} has image shape {case.image.shape}, but "
                             f"{first.case_id} has {first.image.shape}: all cases need the same channels and axes")
        if case.seg.shape != case.image.shape[1:]:
            raise SynthError(f"training case {case.case_id}: mask shape {case.seg.shape} differs from image shape "
                             f"{case.image.shape[1:]}")
        check_label_values(case.seg, labels, f"training case {case.case_id}", allowed_from="the dataset")
        peak = float(np.abs(case.image).max())
        if peak > 1.0 + 1e-3 or not np.isfinite(peak):
            raise SynthError(f"training case {case.case_id} has intensities up to {peak:g}; patch-ddpm expects "
                             f"images normalised to [-1, 1]")


def _check_patch_fits(cases: list[TrainingCase], patch_size: tuple[int, ...]) -> None:
    for case in cases:
        if any(s < p for s, p in zip(case.seg.shape, patch_size)):
            raise SynthError(f"training case {case.case_id} is {'x'.join(map(str, case.seg.shape))} but the patch "
                             f"is {'x'.join(map(str, patch_size))}; choose --patch-size at most the smallest image")


class PatchSampler:
    """Random training patches: crops of image, mask and their global coordinates."""

    def __init__(self, cases: list[TrainingCase], patch_size: tuple[int, ...], foreground_fraction: float, seed: int):
        self.cases = cases
        self.patch = np.array(patch_size)
        self.foreground_fraction = foreground_fraction
        rng = np.random.default_rng([seed, 7])
        self.foreground = []
        for case in cases:
            pos = np.argwhere(case.seg > 0)
            if len(pos) > MAX_FOREGROUND_POSITIONS:
                pos = pos[rng.choice(len(pos), MAX_FOREGROUND_POSITIONS, replace=False)]
            self.foreground.append(pos)

    def start(self, rng: np.random.Generator, index: int) -> tuple[int, ...]:
        shape = np.array(self.cases[index].seg.shape)
        fg = self.foreground[index]
        if len(fg) and rng.random() < self.foreground_fraction:
            centre = fg[rng.integers(len(fg))]
            start = np.clip(centre - self.patch // 2, 0, shape - self.patch)
        else:
            start = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, self.patch)])
        return tuple(int(v) for v in start)

    def batch(self, rng: np.random.Generator, batch_size: int):
        images, segs, starts, shapes = [], [], [], []
        for _ in range(batch_size):
            index = int(rng.integers(len(self.cases)))
            start = self.start(rng, index)
            window = tuple(slice(s, s + p) for s, p in zip(start, self.patch))
            case = self.cases[index]
            images.append(case.image[(slice(None),) + window])
            segs.append(case.seg[window])
            starts.append(start)
            shapes.append(case.seg.shape)
        coords = torch.cat([coordinates([s], tuple(self.patch), shape) for s, shape in zip(starts, shapes)])
        return (torch.from_numpy(np.stack(images).astype(np.float32)),
                torch.from_numpy(np.stack(segs).astype(np.int64)), coords)


def _checkpoint_dir(model_dir: Path) -> Path | None:
    """The last complete checkpoint; a crash between the two renames of a save leaves it in .checkpoint-old."""
    for name in (folder.CHECKPOINT_NAME, ".checkpoint-old"):
        path = model_dir / name
        if (path / "progress.json").is_file():
            return path
    return None


def _save_checkpoint(accelerator, model_dir: Path, step: int) -> None:
    tmp, current, old = model_dir / ".checkpoint-tmp", model_dir / folder.CHECKPOINT_NAME, model_dir / ".checkpoint-old"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        give_files_the_umask_mode(tmp)  # accelerate's safetensors files are written 0600
        write_json_atomic(tmp / "progress.json", {"step": step})
        if old.exists():
            shutil.rmtree(old)
        if current.exists():
            current.rename(old)
        tmp.rename(current)
        if old.exists():
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _mixed_precision(setting: str, on_cpu: bool) -> str:
    if setting != "auto":
        return setting
    if not on_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def fit_model(cases: list[TrainingCase], labels: list[int], model_dir: Path, options: PatchDDPMFitOptions) -> None:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    model_dir = Path(model_dir)
    labels = sorted(int(v) for v in labels)
    _check_cases(cases, labels)
    settings = resolve_fit_settings(options, cases[0].image.ndim - 1)
    _check_patch_fits(cases, settings.patch_size)
    config = build_config(cases, labels, settings)

    if (model_dir / folder.CONFIG_NAME).is_file():
        saved = folder.read_config(model_dir, must_be_trained=False)
        folder.check_trainable(model_dir, saved)
        _check_same_model(model_dir, saved, config)
        config["steps_trained"] = saved.get("steps_trained", 0)
    else:
        config["steps_trained"] = 0
    # Decided before anything is written: how far the folder is, from its weights and from its checkpoint.
    checkpoint = _checkpoint_dir(model_dir)
    start_step = json.loads((checkpoint / "progress.json").read_text())["step"] if checkpoint is not None else 0
    done_before = max(config["steps_trained"], start_step)
    if done_before > settings.train_steps:
        raise SynthError(f"model folder {model_dir} is already trained for {done_before} steps, more than "
                         f"--train-steps {settings.train_steps}; use another -o folder to train a shorter model")
    if config["steps_trained"] == settings.train_steps and (model_dir / folder.WEIGHTS_PATH).is_file():
        return  # already complete: a rerun with the same settings has nothing to do
    if checkpoint is None and config["steps_trained"] > 0:
        raise SynthError(f"model folder {model_dir} holds a model trained for {config['steps_trained']} steps but "
                         f"no {folder.CHECKPOINT_NAME}/ to continue from; use another -o folder to train "
                         f"for {settings.train_steps} steps")
    model_dir.mkdir(parents=True, exist_ok=True)

    on_cpu = options.cpu or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=on_cpu, mixed_precision=_mixed_precision(settings.mixed_precision, on_cpu))
    set_seed(settings.seed)  # initial weights
    network = build_network(config["network"])
    if accelerator.is_main_process:
        # the parts first: a config.json at the top means the folder's parts are all there
        folder.write_parts(model_dir, config, network)
        folder.write_config(model_dir, config)

    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate)
    # As in diffusers' training scripts: accelerate steps a prepared schedule once per process.
    lr_scheduler = get_scheduler(settings.lr_scheduler, optimizer,
                                 num_warmup_steps=settings.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=settings.train_steps * accelerator.num_processes)
    network, optimizer, lr_scheduler = accelerator.prepare(network, optimizer, lr_scheduler)
    ema = EMAModel(network.parameters(), decay=settings.ema_decay) if settings.ema_decay > 0 else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        if ema is not None:
            ema.to(accelerator.device)

    ddpm = DDPMScheduler.from_config(config["scheduler"])
    patches = PatchSampler(cases, settings.patch_size, settings.foreground_fraction, settings.seed)
    foreground = [v for v in labels if v != 0]
    network.train()
    progress = tqdm(range(start_step, settings.train_steps), initial=start_step, total=settings.train_steps,
                    desc=f"patch-ddpm fit {model_dir.name}", disable=not accelerator.is_local_main_process)
    for step in progress:
        rng = np.random.default_rng([settings.seed, step, accelerator.process_index])
        images, segs, coords = patches.batch(rng, settings.batch_size)
        noise_gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        noise = torch.randn(images.shape, generator=noise_gen)
        timesteps = torch.randint(0, ddpm.config.num_train_timesteps, (len(images),), generator=noise_gen)
        images, segs, coords, noise, timesteps = (t.to(accelerator.device) for t in
                                                 (images, segs, coords, noise, timesteps))
        noisy = ddpm.add_noise(images, noise, timesteps)
        inputs = torch.cat([noisy, one_hot(segs, foreground), coords], dim=1)
        with accelerator.autocast():
            predicted = network(inputs, timesteps)
        loss = F.mse_loss(predicted.float(), noise)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(network.parameters())
        progress.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done % settings.checkpoint_every == 0 or done == settings.train_steps:
            _save_checkpoint(accelerator, model_dir, done)

    if accelerator.is_main_process:
        final = accelerator.unwrap_model(network)
        if ema is not None:
            ema.store(final.parameters())
            ema.copy_to(final.parameters())
        folder.save_weights(model_dir, final)
        if ema is not None:
            ema.restore(final.parameters())
        config["steps_trained"] = settings.train_steps
        folder.write_config(model_dir, config)
    accelerator.wait_for_everyone()
