"""The denoising network and the conditioning channels it reads.

Network input, channel by channel:
  1. the noisy image (``image_channels``),
  2. the mask, one-hot, one channel per foreground label of the model (the
     background is every voxel where all of these are 0, so it needs no channel),
  3. global coordinates, one channel per spatial axis: voxel index ``i`` of an
     axis of length ``L`` sits at ``-1 + 2 i / (L - 1)``. A patch therefore knows
     where it lies in the whole image, whatever its own size.
The output is the predicted noise (epsilon) for the image channels.

``PatchDDPMUNet`` wraps MONAI's DiffusionModelUNet in diffusers' ``ModelMixin``
and ``ConfigMixin``, so the model folder's ``unet/`` is written by
``save_pretrained`` and read by ``PatchDDPMUNet.from_pretrained(model_dir,
subfolder="unet")`` like any diffusers model.
"""
from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from monai.networks.nets.diffusion_model_unet import DiffusionModelUNet

from nnunet_synth.generators.patch_ddpm.settings import norm_groups


def network_kwargs(spatial_dims: int, image_channels: int, n_foreground: int,
                   channels: tuple[int, ...], res_blocks: int) -> dict:
    """Arguments of MONAI's DiffusionModelUNet, stored verbatim as the config of ``PatchDDPMUNet``."""
    return dict(
        spatial_dims=spatial_dims,
        in_channels=image_channels + n_foreground + spatial_dims,
        out_channels=image_channels,
        channels=list(channels),
        num_res_blocks=res_blocks,
        # No attention in the resolution levels: they stay convolutional and local,
        # so the network runs on whole images of any size and on tiles alike.
        attention_levels=[False] * len(channels),
        norm_num_groups=norm_groups(tuple(channels)),
        # MONAI's middle block always has self-attention; PyTorch's fused
        # scaled_dot_product_attention keeps its memory linear in the number of
        # bottleneck voxels (its compute stays quadratic: see sample.py).
        use_flash_attention=True,
    )


class PatchDDPMUNet(ModelMixin, ConfigMixin):
    """MONAI's DiffusionModelUNet as a diffusers model; its config is the UNet's arguments."""

    @register_to_config
    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, channels: list[int],
                 num_res_blocks: int, attention_levels: list[bool], norm_num_groups: int,
                 use_flash_attention: bool = True):
        super().__init__()
        self.unet = DiffusionModelUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                                       channels=list(channels), num_res_blocks=num_res_blocks,
                                       attention_levels=list(attention_levels), norm_num_groups=norm_num_groups,
                                       use_flash_attention=use_flash_attention)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.unet(x, timesteps)


def build_network(kwargs: dict) -> PatchDDPMUNet:
    return PatchDDPMUNet(**kwargs)


def one_hot(seg: torch.Tensor, foreground_labels: list[int]) -> torch.Tensor:
    """(B, *S) integer labels -> (B, n_fg, *S) float one-hot without a background channel."""
    return torch.stack([seg == label for label in foreground_labels], dim=1).float()


def coordinates(starts: list[tuple[int, ...]], size: tuple[int, ...], image_shape: tuple[int, ...],
                device=None) -> torch.Tensor:
    """(B, D, *size) global coordinates of B windows of ``size`` starting at ``starts`` in ``image_shape``."""
    out = []
    for start in starts:
        axes = []
        for s, n, length in zip(start, size, image_shape):
            idx = torch.arange(s, s + n, dtype=torch.float32, device=device)
            axes.append(idx * (2.0 / max(length - 1, 1)) - 1.0)
        out.append(torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0))
    return torch.stack(out, dim=0)
