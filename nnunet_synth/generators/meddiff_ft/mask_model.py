"""The mask generator: a small DDPM on the training lesions' shapes, and the cleaning of what it draws.

Training data: each lesion component of the training masks, in a square window
``MASK_CONTEXT`` times its larger side (centred), resized to the mask
resolution (nearest), in {-1, 1}, flipped and rotated by multiples of 90
degrees at random. The network is MONAI's DiffusionModelUNet (as patch-ddpm
builds it), the noise schedule diffusers' DDPMScheduler; sampling uses a
DDIMScheduler built from that schedule.

Cleaning of a drawn mask: threshold at 0, fill holes, keep the largest
8-connected component (unless every component is allowed), and require at
least ``min_pixels`` pixels; a mask that fails is drawn again.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nnunet_synth import __version__
from nnunet_synth.errors import SynthError
from nnunet_synth.generators.meddiff_ft import folder

MASK_CONTEXT = 1.25
_EIGHT = np.ones((3, 3), dtype=bool)


def network_kwargs(channels) -> dict:
    from nnunet_synth.generators.patch_ddpm.settings import norm_groups

    return dict(spatial_dims=2, in_channels=1, out_channels=1, channels=list(channels), num_res_blocks=1,
                attention_levels=[False] * len(channels), norm_num_groups=norm_groups(tuple(channels)))


def mask_canvases(cases, label: int, resolution: int) -> np.ndarray:
    """(N, R, R) float32 in {-1, 1}: every lesion component of ``label``, centred in its square window."""
    from scipy import ndimage

    from nnunet_synth.generators.sd.framing import square_box_around, to_model

    canvases = []
    for case in cases:
        components, _ = ndimage.label(case.seg == label, structure=_EIGHT)
        for k, box in enumerate(ndimage.find_objects(components), start=1):
            bbox = (box[0].start, box[1].start, box[0].stop, box[1].stop)
            frame = square_box_around(bbox, case.seg.shape, MASK_CONTEXT, 1, resolution=resolution)
            canvas = to_model(components == k, frame, order=0)
            if canvas.any():
                canvases.append(np.where(canvas, 1.0, -1.0).astype(np.float32))
    if not canvases:
        raise SynthError(f"no training case has label {label}: there are no lesion shapes for the mask DDPM")
    return np.stack(canvases)


def _scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def train_mask_ddpm(cases, options, mask_dir: Path) -> None:
    """Train (or resume) the mask DDPM into ``mask_dir`` with the shared training loop."""
    from accelerate import Accelerator
    from monai.networks.nets.diffusion_model_unet import DiffusionModelUNet

    from nnunet_synth.generators.sd.training import prepare_training, run_steps

    mask_dir = Path(mask_dir)
    config = {"_class_name": "MedDiffFTMaskDDPM", "nnunet_synth_version": __version__,
              "network": network_kwargs(options.mask_channels), "resolution": options.mask_resolution,
              "label": options.label, "steps": options.mask_steps, "steps_trained": 0,
              "batch_size": options.mask_batch_size, "learning_rate": options.mask_lr, "seed": options.seed}
    if (mask_dir / "config.json").is_file():
        saved = folder.read_mask_config(mask_dir, must_be_trained=False)
        for key in ("network", "resolution", "label", "batch_size", "learning_rate", "seed"):
            if saved.get(key) != config[key]:
                raise SynthError(f"mask DDPM {mask_dir} was trained with other settings ({key}: {saved.get(key)} "
                                 f"there, {config[key]} now); use another -o folder or delete it")
        if saved["steps_trained"] == options.mask_steps and (mask_dir / folder.MASK_WEIGHTS).is_file():
            return
    canvases = torch.from_numpy(mask_canvases(cases, options.label, options.mask_resolution))
    mask_dir.mkdir(parents=True, exist_ok=True)
    folder.write_mask_config(mask_dir, config)
    scheduler = _scheduler()
    scheduler.save_pretrained(str(mask_dir))
    accelerator = Accelerator(cpu=options.cpu or not torch.cuda.is_available(), mixed_precision="no")
    torch.manual_seed(options.seed)  # the network's initial weights
    network = DiffusionModelUNet(**config["network"])
    loop = replace(options, train_steps=options.mask_steps, gradient_accumulation_steps=1,
                   learning_rate=options.mask_lr, lr_warmup_steps=0, use_ema=False, use_8bit_adam=False)
    network, optimizer, lr_scheduler, ema = prepare_training(accelerator, network, loop)

    def loss_of(rng, generator):
        index = rng.integers(len(canvases), size=options.mask_batch_size)
        batch = canvases[torch.from_numpy(index)]
        flips = rng.integers(2, size=(len(index), 2))
        turns = rng.integers(4, size=len(index))
        batch = torch.stack([torch.rot90(torch.flip(m, [d for d, f in enumerate(fl) if f]), int(k), (0, 1))
                             for m, fl, k in zip(batch, flips, turns)])[:, None].to(accelerator.device)
        noise = torch.randn(batch.shape, generator=generator).to(batch)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),), generator=generator)
        noisy = scheduler.add_noise(batch, noise, timesteps)
        predicted = network(noisy, timesteps.to(accelerator.device))
        return torch.nn.functional.mse_loss(predicted.float(), noise.float())

    run_steps(accelerator, network, optimizer, lr_scheduler, ema, mask_dir, loop, loss_of,
              f"meddiff-ft mask DDPM fit {mask_dir.parent.name}")
    if accelerator.is_main_process:
        from safetensors.torch import save_file

        from nnunet_synth.atomic import atomic_path

        state = {k: v.detach().cpu().contiguous() for k, v in accelerator.unwrap_model(network).state_dict().items()}
        with atomic_path(mask_dir / folder.MASK_WEIGHTS) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        config["steps_trained"] = options.mask_steps
        folder.write_mask_config(mask_dir, config)
    accelerator.wait_for_everyone()


def clean_mask(drawn: np.ndarray, min_pixels: int, single_component: bool = True) -> np.ndarray | None:
    """A drawn mask (values in about [-1, 1]) binarised and cleaned, or None if it fails the rules."""
    from scipy import ndimage

    mask = ndimage.binary_fill_holes(np.asarray(drawn) > 0)
    components, n = ndimage.label(mask, structure=_EIGHT)
    if n == 0:
        return None
    if single_component and n > 1:
        sizes = ndimage.sum_labels(mask, components, index=np.arange(1, n + 1))
        mask = components == 1 + int(np.argmax(sizes))
    if mask.sum() < min_pixels:
        return None
    return mask


class MaskGenerator:
    """A trained mask DDPM, ready to draw masks."""

    def __init__(self, mask_dir: Path, device: str = "cpu"):
        from diffusers import DDIMScheduler
        from monai.networks.nets.diffusion_model_unet import DiffusionModelUNet
        from safetensors.torch import load_file

        self.config = folder.read_mask_config(mask_dir)
        self.network = DiffusionModelUNet(**self.config["network"])
        self.network.load_state_dict(load_file(str(Path(mask_dir) / folder.MASK_WEIGHTS)))
        self.network.to(device).eval()
        self.device = device
        self.scheduler = DDIMScheduler.from_pretrained(str(mask_dir))

    def draw(self, seed: int, steps: int) -> np.ndarray:
        """One raw mask (R, R) float32, fully determined by ``seed``."""
        generator = torch.Generator().manual_seed(int(seed) % 2 ** 63)
        side = self.config["resolution"]
        sample = torch.randn((1, 1, side, side), generator=generator).to(self.device)
        self.scheduler.set_timesteps(steps)
        with torch.no_grad():
            for t in self.scheduler.timesteps:
                predicted = self.network(sample, torch.full((1,), int(t), device=self.device))
                sample = self.scheduler.step(predicted, t, sample).prev_sample
        return sample[0, 0].float().cpu().numpy()

    def generate(self, seed: int, steps: int, tries: int, min_pixels: int, single_component: bool):
        """(a clean bool mask or None, the number of draws it took)."""
        for attempt in range(tries):
            mask = clean_mask(self.draw(np.random.default_rng([seed, attempt]).integers(2 ** 62), steps),
                              min_pixels, single_component)
            if mask is not None:
                return mask, attempt + 1
        return None, tries


__all__ = ["MaskGenerator", "clean_mask", "mask_canvases", "train_mask_ddpm"]
