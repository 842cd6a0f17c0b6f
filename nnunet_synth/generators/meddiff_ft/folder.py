"""The meddiff-ft model folder (the SD parts follow nnunet_synth.generators.sd.model_folder).

    MODEL_DIR/
      config.json            base SD folder, prompts, lesion label, resolution, context, which parts exist,
                             lesion statistics, all settings, steps_trained (of the lesion fine-tune)
      unet/                  the lesion fine-tune (9-channel inpainting UNet, masked loss)
      checkpoints/           its accelerate checkpoints
      background/            the background fine-tune (inverted masks): config.json, unet/, checkpoints/
      mask/                  the mask DDPM: config.json, diffusion_pytorch_model.safetensors, scheduler_config.json,
                             checkpoints/
      lesion_bank.npz        the training lesions' shapes and sizes (placement sizes; shapes without a mask DDPM)
      reference_windows.npz  the training lesions' windows (uint8 RGB), the quality filter's real references
      training_cases.json    written by the framework
"""
from __future__ import annotations

from pathlib import Path

from nnunet_synth.atomic import read_json, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.generators.sd.model_folder import FORMAT_VERSION, ModelFolder

FOLDER = ModelFolder("meddiff-ft", "MedDiffFTGenerator", "unet",
                     keys=("label", "prompt", "context", "parts", "healthy_training_cases", "largest_lesion_radius_px"))
BACKGROUND = ModelFolder("meddiff-ft", "MedDiffFTBackground", "unet", keys=("prompt",))
UNET_DIR = FOLDER.weights_dir
BACKGROUND_DIR = "background"
MASK_DIR = "mask"
MASK_WEIGHTS = "diffusion_pytorch_model.safetensors"
REFERENCES_FILE = "reference_windows.npz"
fit_hint, read_config, write_config = FOLDER.fit_hint, FOLDER.read_config, FOLDER.write_config


def read_mask_config(mask_dir: Path, must_be_trained: bool = True) -> dict:
    """The mask DDPM's config.json; with ``must_be_trained`` its weights must be there and fully trained."""
    mask_dir = Path(mask_dir)
    path = mask_dir / "config.json"
    config = read_json(path, "train it with `nnunet-synth fit meddiff-ft` (or point --mask-model at a mask/ folder)")
    missing = [k for k in ("_class_name", "network", "resolution", "steps", "steps_trained") if k not in config]
    if missing or config["_class_name"] != "MedDiffFTMaskDDPM":
        raise SynthError(f"{path} is not a meddiff-ft mask DDPM config "
                         f"({'missing ' + ', '.join(missing) if missing else '_class_name ' + repr(config['_class_name'])})")
    if must_be_trained and (not (mask_dir / MASK_WEIGHTS).is_file() or config["steps_trained"] != config["steps"]):
        raise SynthError(f"mask DDPM {mask_dir} is incomplete (training did not finish); rerun "
                         f"`nnunet-synth fit meddiff-ft ...` with the same -o folder to resume it")
    return config


def write_mask_config(mask_dir: Path, config: dict) -> None:
    write_json_atomic(Path(mask_dir) / "config.json", config)


__all__ = ["FORMAT_VERSION", "UNET_DIR", "fit_hint", "read_config", "write_config"]
