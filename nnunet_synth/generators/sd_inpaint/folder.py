"""The sd-inpaint model folder (layout: nnunet_synth.generators.sd.model_folder).

    MODEL_DIR/
      config.json          base SD folder, UNet kind, resolution, prompt, lesion label, settings, steps_trained
      unet/                the fine-tuned UNet
      lesion_bank.npz      the training lesions' shapes and sizes (placement of new lesions)
      checkpoints/, training_cases.json
"""
from nnunet_synth.generators.sd.model_folder import FORMAT_VERSION, ModelFolder

FOLDER = ModelFolder("sd-inpaint", "SDInpaintGenerator", "unet",
                     keys=("unet_in_channels", "label", "context", "mask_dilation", "prompt"))
UNET_DIR = FOLDER.weights_dir
fit_hint, read_config, write_config = FOLDER.fit_hint, FOLDER.read_config, FOLDER.write_config

__all__ = ["FORMAT_VERSION", "UNET_DIR", "fit_hint", "read_config", "write_config"]
