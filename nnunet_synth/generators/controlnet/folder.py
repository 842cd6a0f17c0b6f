"""The controlnet model folder (layout: nnunet_synth.generators.sd.model_folder).

    MODEL_DIR/
      config.json          base SD folder, resolution, edge rule, captions, settings, steps_trained
      controlnet/          the trained ControlNet (also what ``fit --init-controlnet`` starts from)
      checkpoints/, training_cases.json
"""
from nnunet_synth.generators.sd.model_folder import FORMAT_VERSION, ModelFolder

FOLDER = ModelFolder("controlnet", "ControlNetGenerator", "controlnet", keys=("edge_rule", "captions"),
                     fit_arguments=" --prompt TEXT")
CONTROLNET_DIR = FOLDER.weights_dir
fit_hint, read_config, write_config = FOLDER.fit_hint, FOLDER.read_config, FOLDER.write_config

__all__ = ["FORMAT_VERSION", "CONTROLNET_DIR", "fit_hint", "read_config", "write_config"]
