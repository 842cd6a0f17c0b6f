"""Patch-wise, mask-conditioned DDPM (2D and 3D) with memory-bounded tiled sampling.

Importing this package is light (no torch); the network, training and
sampling modules load when a model is fitted or loaded.
"""
from nnunet_synth.generators.patch_ddpm.generator import PatchDDPMGenerator

__all__ = ["PatchDDPMGenerator"]
