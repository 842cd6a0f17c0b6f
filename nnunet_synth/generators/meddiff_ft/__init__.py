"""MedDiff-FT: masked fine-tuning of SD inpainting, guided-mask synthesis of new pairs on lesion-free
backgrounds, a mask DDPM, a background model, a DINOv2 quality filter and mask erosion (docs/meddiff_ft.md).

Importing this package is light (no torch); training and the pipelines load
when a model is fitted or used.
"""
from nnunet_synth.generators.meddiff_ft.generator import MedDiffFTGenerator

__all__ = ["MedDiffFTGenerator"]
