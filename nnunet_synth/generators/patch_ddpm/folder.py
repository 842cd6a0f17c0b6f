"""The model folder, in the Hugging Face layout.

    MODEL_DIR/
      config.json                          network, DDPM schedule, patch size, labels, settings
      diffusion_pytorch_model.safetensors  the weights to sample with (EMA weights when EMA is on)
      checkpoint/                          accelerate state of the last checkpoint (resume only)
      training_cases.json                  written by the framework, not here

A folder is complete when config.json and the weights exist; ``steps_trained``
in config.json says how far the saved weights were trained.
"""
from __future__ import annotations

from pathlib import Path

from nnunet_synth.atomic import atomic_path, read_json, write_json_atomic
from nnunet_synth.errors import SynthError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CHECKPOINT_NAME = "checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "spatial_dims", "image_channels", "labels", "patch_size", "network",
                 "scheduler", "settings")


def fit_hint(model_dir: Path) -> str:
    return f"train it with `nnunet-synth fit patch-ddpm -d DATASET --fold F -o {model_dir}`"


def write_config(model_dir: Path, config: dict) -> None:
    write_json_atomic(Path(model_dir) / CONFIG_NAME, config)


def read_config(model_dir: Path, must_be_trained: bool = True) -> dict:
    model_dir = Path(model_dir)
    path = model_dir / CONFIG_NAME
    if not model_dir.is_dir():
        raise SynthError(f"model folder {model_dir} does not exist; {fit_hint(model_dir)}")
    config = read_json(path, fit_hint(model_dir))
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise SynthError(f"{path} is not a patch-ddpm config (missing {', '.join(missing)}); {fit_hint(model_dir)}")
    if config["format_version"] != FORMAT_VERSION:
        raise SynthError(f"{path} has format_version {config['format_version']}, this version reads "
                         f"{FORMAT_VERSION}; retrain with {fit_hint(model_dir)}")
    if must_be_trained and not (model_dir / WEIGHTS_NAME).is_file():
        raise SynthError(f"model folder {model_dir} is incomplete (no {WEIGHTS_NAME}: training did not finish); "
                         f"rerun `nnunet-synth fit patch-ddpm ... -o {model_dir}` to resume it")
    return config


def save_weights(model_dir: Path, state_dict: dict) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(Path(model_dir) / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def load_weights(model_dir: Path, network) -> None:
    """Load the saved weights into ``network``; any missing or unexpected tensor is an error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(model_dir) / WEIGHTS_NAME
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise SynthError(f"{path} cannot be read ({e}); {fit_hint(Path(model_dir))}") from None
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of the wrong shape, "
                  f"e.g. {(missing + unexpected + wrong)[0]}")
        raise SynthError(f"{path} does not match {Path(model_dir) / CONFIG_NAME} ({detail}); {fit_hint(Path(model_dir))}")
    network.load_state_dict(state)
