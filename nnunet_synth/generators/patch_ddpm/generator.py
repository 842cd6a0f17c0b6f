"""``PatchDDPMGenerator``: the patch-wise DDPM behind the Generator interface."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nnunet_synth.errors import SynthError
from nnunet_synth.generators.base import Generator, TrainingCase
from nnunet_synth.generators.patch_ddpm import folder, options


class PatchDDPMGenerator(Generator):
    """Mask-conditioned DDPM trained from scratch on random patches, with global coordinate channels.

    2D and 3D share one code path (MONAI's DiffusionModelUNet with
    ``spatial_dims`` 2 or 3); sampling is full-size or tiled.
    """

    name = "patch-ddpm"
    # "new" masks are varied by the framework; this model only paints images for masks.
    supported_modes = ("twins", "new")

    def __init__(self, config: dict, network, device: str, model_dir: Path):
        self.config = config
        self.network = network
        self.device = device
        self.model_dir = Path(model_dir)

    @classmethod
    def add_fit_arguments(cls, parser: argparse.ArgumentParser) -> None:
        options.add_fit_arguments(parser)

    @classmethod
    def add_generate_arguments(cls, parser: argparse.ArgumentParser) -> None:
        options.add_generate_arguments(parser)

    @classmethod
    def fit(cls, cases: list[TrainingCase], labels: list[int], model_dir: Path, args: argparse.Namespace) -> None:
        from nnunet_synth.generators.patch_ddpm.train import fit_model

        fit_model(cases, labels, Path(model_dir), args)

    @classmethod
    def load(cls, model_dir: Path, device: str = "cpu") -> "PatchDDPMGenerator":
        import torch

        from nnunet_synth.generators.patch_ddpm.network import build_network

        config = folder.read_config(Path(model_dir))
        try:
            network = build_network(config["network"])
        except (TypeError, ValueError) as e:
            raise SynthError(f"{Path(model_dir) / folder.CONFIG_NAME} has an invalid network entry ({e}); "
                             f"{folder.fit_hint(Path(model_dir))}") from None
        folder.load_weights(Path(model_dir), network)
        network.to(torch.device(device)).eval()
        return cls(config, network, device, Path(model_dir))

    def model_labels(self) -> list[int]:
        return list(self.config["labels"])

    def sampling_options(self, args: argparse.Namespace | None) -> "SamplingOptions":
        """Options given on the command line, else the defaults stored with the model."""
        from nnunet_synth.generators.patch_ddpm.sample import SamplingOptions

        defaults = self.config["settings"]

        def given(name, default):
            value = getattr(args, name, None) if args is not None else None
            return default if value is None else value

        opts = SamplingOptions(sampler=given("sampler", "ddim"), steps=int(given("steps", defaults["sampling_steps"])),
                               sampling=given("sampling", defaults["sampling"]),
                               tile_overlap=float(given("tile_overlap", defaults["tile_overlap"])),
                               tile_batch=int(given("tile_batch", 4)))
        timesteps = self.config["scheduler"]["num_train_timesteps"]
        if not 1 <= opts.steps <= timesteps:
            raise SynthError(f"--steps must be between 1 and {timesteps} (the model's training timesteps), "
                             f"got {opts.steps}")
        if opts.sampling not in ("full", "tiled"):
            raise SynthError(f"--sampling must be full or tiled, got {opts.sampling!r}")
        if not 0 <= opts.tile_overlap < 1:
            raise SynthError(f"--tile-overlap must be in [0, 1), got {opts.tile_overlap}")
        if opts.tile_batch < 1:
            raise SynthError(f"--tile-batch must be at least 1, got {opts.tile_batch}")
        return opts

    def generate(self, mask: np.ndarray, spacing: tuple[float, ...], seed: int,
                 args: argparse.Namespace) -> np.ndarray:
        """An image for ``mask``. ``spacing`` is not used: the model works in voxel space, like its training."""
        from nnunet_synth.generators.patch_ddpm.sample import check_mask, sample_image

        check_mask(np.asarray(mask), self.config["spatial_dims"], self.model_labels(), str(self.model_dir))
        if len(spacing) != mask.ndim:
            raise SynthError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {mask.ndim}D mask")
        return sample_image(self.network, self.config, np.asarray(mask), seed, self.sampling_options(args),
                            self.device)
