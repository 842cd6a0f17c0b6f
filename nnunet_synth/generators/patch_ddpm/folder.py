"""The model folder, in the Hugging Face layout (format 2).

    MODEL_DIR/
      model_index.json                          names the parts and their classes, like a diffusers pipeline
      config.json                               the generator: spatial dims, image channels, labels, patch
                                                size, settings, steps_trained
      unet/config.json                          PatchDDPMUNet (MONAI DiffusionModelUNet arguments)
      unet/diffusion_pytorch_model.safetensors  the weights to sample with (EMA weights when EMA is on)
      scheduler/scheduler_config.json           the DDPMScheduler the network was trained with
      checkpoint/                               accelerate state of the last checkpoint (resume only)
      training_cases.json                       written by the framework, not here

Each part loads with its own class: ``PatchDDPMUNet.from_pretrained(model_dir,
subfolder="unet")``, ``DDPMScheduler.from_pretrained(model_dir,
subfolder="scheduler")``. A folder is complete when config.json and the unet
weights exist; ``steps_trained`` in config.json says how far they were trained.

Format 1 (before this layout: network and scheduler inside config.json,
unprefixed MONAI weights at the top) is still read for generation; ``fit``
refuses to continue it (``check_trainable``).
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from nnunet_synth.atomic import TEMP_PREFIX, new_file_mode, read_json, write_json_atomic
from nnunet_synth.errors import SynthError

CONFIG_NAME = "config.json"
INDEX_NAME = "model_index.json"
UNET_FOLDER = "unet"
SCHEDULER_FOLDER = "scheduler"
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_PATH = f"{UNET_FOLDER}/{WEIGHTS_NAME}"
CHECKPOINT_NAME = "checkpoint"
FORMAT_VERSION = 2
OLD_FORMAT_VERSION = 1
NETWORK_CLASS = ("nnunet_synth.generators.patch_ddpm.network", "PatchDDPMUNet")
SCHEDULER_CLASS = ("diffusers", "DDPMScheduler")
REQUIRED_KEYS = ("format_version", "spatial_dims", "image_channels", "labels", "patch_size", "settings")
# Kept in memory (the sampler and fit read them) but stored in the parts' own files.
PART_KEYS = ("network", "scheduler")


def fit_hint(model_dir: Path) -> str:
    return f"train it with `nnunet-synth fit patch-ddpm -d DATASET --fold F -o {model_dir}`"


def weights_path(model_dir: Path, config: dict) -> Path:
    name = WEIGHTS_NAME if config["format_version"] == OLD_FORMAT_VERSION else WEIGHTS_PATH
    return Path(model_dir) / name


def write_config(model_dir: Path, config: dict) -> None:
    """The generator's config.json; the network and scheduler entries are the parts' (``write_parts``)."""
    write_json_atomic(Path(model_dir) / CONFIG_NAME, {k: v for k, v in config.items() if k not in PART_KEYS})


def _publish(model_dir: Path, subfolder: str, save) -> None:
    """``save(folder)`` into a temporary folder, then each file renamed into ``subfolder`` (atomic per file)."""
    target = Path(model_dir) / subfolder
    tmp = Path(model_dir) / f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{subfolder}"
    try:
        save(tmp)
        target.mkdir(parents=True, exist_ok=True)
        mode = new_file_mode()
        # config first, weights last: complete weights never sit beside a config they do not match
        for path in sorted(tmp.iterdir(), key=lambda p: p.suffix == ".safetensors"):
            os.chmod(path, mode)  # safetensors writes 0600
            os.replace(path, target / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_parts(model_dir: Path, config: dict, network) -> None:
    """model_index.json, scheduler/ and unet/config.json for a model about to be trained."""
    import diffusers
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(config["scheduler"])
    _publish(model_dir, SCHEDULER_FOLDER, scheduler.save_pretrained)
    _publish(model_dir, UNET_FOLDER, network.save_config)
    write_json_atomic(Path(model_dir) / INDEX_NAME, {
        "_class_name": config["_class_name"],
        "_diffusers_version": diffusers.__version__,
        UNET_FOLDER: list(NETWORK_CLASS),
        SCHEDULER_FOLDER: list(SCHEDULER_CLASS),
    })


def save_weights(model_dir: Path, network) -> None:
    """The network's config and weights into unet/ with ``save_pretrained`` (the weights file replaced atomically)."""
    _publish(model_dir, UNET_FOLDER, lambda folder: network.save_pretrained(folder, safe_serialization=True))


def _without_private(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def read_config(model_dir: Path, must_be_trained: bool = True) -> dict:
    """config.json with the network and scheduler configs of the parts (``network``, ``scheduler``), checked."""
    model_dir = Path(model_dir)
    path = model_dir / CONFIG_NAME
    if not model_dir.is_dir():
        raise SynthError(f"model folder {model_dir} does not exist; {fit_hint(model_dir)}")
    config = read_json(path, fit_hint(model_dir))
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise SynthError(f"{path} is not a patch-ddpm config (missing {', '.join(missing)}); {fit_hint(model_dir)}")
    version = config["format_version"]
    if version == OLD_FORMAT_VERSION:
        missing = [k for k in PART_KEYS if k not in config]
        if missing:
            raise SynthError(f"{path} is not a patch-ddpm config (missing {', '.join(missing)}); "
                             f"{fit_hint(model_dir)}")
    elif version == FORMAT_VERSION:
        config["network"] = _without_private(read_json(model_dir / UNET_FOLDER / CONFIG_NAME, fit_hint(model_dir)))
        config["scheduler"] = read_json(model_dir / SCHEDULER_FOLDER / SCHEDULER_CONFIG_NAME, fit_hint(model_dir))
    else:
        raise SynthError(f"{path} has format_version {version}, this version reads {FORMAT_VERSION} (and "
                         f"{OLD_FORMAT_VERSION}); retrain with {fit_hint(model_dir)}")
    if must_be_trained and not weights_path(model_dir, config).is_file():
        raise SynthError(f"model folder {model_dir} is incomplete (no {weights_path(model_dir, config).name} in "
                         f"{weights_path(model_dir, config).parent}: training did not finish); "
                         f"rerun `nnunet-synth fit patch-ddpm ... -o {model_dir}` to resume it")
    return config


def check_trainable(model_dir: Path, config: dict) -> None:
    """``fit`` continues format-2 folders only: a format-1 checkpoint holds the network without its wrapper."""
    if config["format_version"] == OLD_FORMAT_VERSION:
        raise SynthError(f"model folder {model_dir} has the format-1 layout (network and scheduler inside "
                         f"config.json, weights at the top); `generate` still reads it, but `fit` cannot continue "
                         f"it: to train further or to get the Hugging Face layout (unet/, scheduler/, "
                         f"model_index.json), train into a new -o folder with the same options")


def load_network(model_dir: Path, config: dict):
    """The trained PatchDDPMUNet of the folder; any missing, unexpected or misshapen tensor is an error."""
    from nnunet_synth.generators.patch_ddpm.network import PatchDDPMUNet, build_network

    model_dir = Path(model_dir)
    path = weights_path(model_dir, config)
    if config["format_version"] == OLD_FORMAT_VERSION:
        try:
            network = build_network(config["network"])
        except (TypeError, ValueError) as e:
            raise SynthError(f"{model_dir / CONFIG_NAME} has an invalid network entry ({e}); "
                             f"{fit_hint(model_dir)}") from None
        _load_state(path, model_dir / CONFIG_NAME, network.unet, model_dir)
        return network
    try:
        network, info = PatchDDPMUNet.from_pretrained(model_dir, subfolder=UNET_FOLDER, local_files_only=True,
                                                      use_safetensors=True, output_loading_info=True)
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        # diffusers' messages run over several lines; the first one names the problem
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SynthError(f"{path} cannot be read ({first}); {fit_hint(model_dir)}") from None
    _check_loading(info, path, model_dir / UNET_FOLDER / CONFIG_NAME, model_dir)
    return network


def _check_loading(info: dict, path: Path, config_path: Path, model_dir: Path) -> None:
    # from_pretrained initialises missing tensors randomly and only warns about them
    problems = {key: info.get(key) or [] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(problems.values()) or info.get("error_msgs"):
        detail = ", ".join(f"{len(v)} {k.split('_')[0]}" for k, v in problems.items() if v)
        example = next((v[0] for v in problems.values() if v), (info.get("error_msgs") or [""])[0])
        raise SynthError(f"{path} does not match {config_path} ({detail or 'load errors'}, e.g. {example}); "
                         f"{fit_hint(model_dir)}")


def _load_state(path: Path, config_path: Path, module, model_dir: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise SynthError(f"{path} cannot be read ({e}); {fit_hint(model_dir)}") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of the wrong shape, "
                  f"e.g. {(missing + unexpected + wrong)[0]}")
        raise SynthError(f"{path} does not match {config_path} ({detail}); {fit_hint(model_dir)}")
    module.load_state_dict(state)
