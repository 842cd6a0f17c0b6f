"""nnunet_synth: diffusion-synthesized image-mask pairs for nnU-Net v2."""

__version__ = "0.1.0"
