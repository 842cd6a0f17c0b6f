"""The model folders of the Stable Diffusion generators: config.json, one trained diffusers model, checkpoints.

    MODEL_DIR/
      config.json          base SD folder, the generator's choices, all settings, steps_trained
      <weights_dir>/       the trained model (diffusers layout; the EMA weights with --use-ema)
      checkpoints/         accelerate states for resuming (nnunet_synth.generators.sd.checkpoints)
      training_cases.json  written by the framework

The frozen parts (VAE, text encoder, tokenizer, scheduler, and for a ControlNet
the UNet) are not copied: they are read from the base SD folder recorded in
config.json (``generate --pretrained`` points elsewhere if that folder moved).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnunet_synth.atomic import read_json, write_json_atomic
from nnunet_synth.errors import SynthError

CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
COMMON_KEYS = ("format_version", "pretrained", "image_channels", "labels", "resolution", "settings")


@dataclass(frozen=True)
class ModelFolder:
    generator: str                  # the registry name, e.g. "sd-inpaint"
    class_name: str                 # recorded as config.json's _class_name
    weights_dir: str                # the trained model's subfolder
    keys: tuple[str, ...] = ()      # config.json keys of this generator, besides COMMON_KEYS
    fit_arguments: str = ""         # shown in the hint after --pretrained SD_DIR

    def fit_hint(self, model_dir: Path) -> str:
        return (f"train it with `nnunet-synth fit {self.generator} -d DATASET --fold F -o {model_dir} "
                f"--pretrained SD_DIR{self.fit_arguments}`")

    def write_config(self, model_dir: Path, config: dict) -> None:
        write_json_atomic(Path(model_dir) / CONFIG_NAME, config)

    def read_config(self, model_dir: Path, must_be_trained: bool = True) -> dict:
        """config.json, checked; with ``must_be_trained`` the trained weights must be there too."""
        model_dir = Path(model_dir)
        path = model_dir / CONFIG_NAME
        if not model_dir.is_dir():
            raise SynthError(f"model folder {model_dir} does not exist; {self.fit_hint(model_dir)}")
        config = read_json(path, self.fit_hint(model_dir))
        missing = [k for k in COMMON_KEYS + self.keys if k not in config]
        if missing or config.get("_class_name") != self.class_name:
            what = f"missing {', '.join(missing)}" if missing else f"_class_name {config.get('_class_name')!r}"
            raise SynthError(f"{path} is not a {self.generator} config ({what}); {self.fit_hint(model_dir)}")
        if config["format_version"] != FORMAT_VERSION:
            raise SynthError(f"{path} has format_version {config['format_version']}, this version reads "
                             f"{FORMAT_VERSION}; retrain: {self.fit_hint(model_dir)}")
        if must_be_trained and not (model_dir / self.weights_dir / "config.json").is_file():
            raise SynthError(f"model folder {model_dir} is incomplete (no {self.weights_dir}/: training did not "
                             f"finish); rerun `nnunet-synth fit {self.generator} ... -o {model_dir}` to resume it")
        return config
