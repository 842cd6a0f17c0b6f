"""``PatchDDPMGenerator``: the patch-wise DDPM behind the Generator interface."""
from __future__ import annotations

from pathlib import Path

from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import Generator, GenerationRequest, GenerationResponse, TrainingCase
from nnunet_synth.generators.patch_ddpm import folder
from nnunet_synth.generators.patch_ddpm.settings import (PatchDDPMFitOptions, PatchDDPMGenerateOptions,
                                                         resolve_generate_options)


class PatchDDPMGenerator(Generator):
    """Mask-conditioned DDPM trained from scratch on random patches, with global coordinate channels.

    2D and 3D share one code path (MONAI's DiffusionModelUNet with
    ``spatial_dims`` 2 or 3); sampling is full-size or tiled, from pure noise
    or (``strength`` < 1) from the noised source image.
    """

    name = "patch-ddpm"
    # "new" masks are varied by the framework; this model only paints images for masks.
    supported_modes = ("twins", "new")
    fit_settings = PatchDDPMFitOptions
    generate_settings = PatchDDPMGenerateOptions

    def __init__(self, config: dict, network, device: str, model_dir: Path):
        self.config = config
        self.network = network
        self.device = device
        self.model_dir = Path(model_dir)

    @classmethod
    def fit(cls, cases: list[TrainingCase], labels: list[int], model_dir: Path,
            settings: PatchDDPMFitOptions) -> None:
        from nnunet_synth.generators.patch_ddpm.train import fit_model

        fit_model(cases, labels, Path(model_dir), settings)

    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu") -> "PatchDDPMGenerator":
        import torch

        config = folder.read_config(Path(model_dir))
        network = folder.load_network(Path(model_dir), config)
        network.to(torch.device(device)).eval()
        return cls(config, network, device, Path(model_dir))

    def model_labels(self) -> list[int]:
        return list(self.config["labels"])

    def check_settings(self, settings: PatchDDPMGenerateOptions) -> PatchDDPMGenerateOptions:
        """Options left at None take the defaults stored with the model."""
        return resolve_generate_options(settings, self.config)

    def generate(self, request: GenerationRequest) -> GenerationResponse:
        """An image for the target mask. Spacing is not used: the model works in voxel space, like its training."""
        import numpy as np

        from nnunet_synth.generators.patch_ddpm.sample import check_mask, sample_image

        mask = np.asarray(request.target_mask)
        check_mask(mask, self.config["spatial_dims"], self.model_labels(), str(self.model_dir))
        settings = self.check_settings(request.settings)
        source = None
        if settings.strength < 1:
            source = np.asarray(request.source.image, dtype=np.float32)
            expected = (self.config["image_channels"],) + mask.shape
            if source.shape != expected:
                raise SynthError(f"--strength {settings.strength}: source case {request.source.case_id} has an "
                                 f"image of shape {source.shape}, but the mask and the model in {self.model_dir} "
                                 f"need {expected}")
        image = sample_image(self.network, self.config, mask, request.seed, settings, self.device, source=source)
        return GenerationResponse(image=image, mask=mask)
