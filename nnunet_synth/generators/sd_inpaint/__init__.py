"""Stable Diffusion inpainting of new lesions into real 2D images (the thyroid ultrasound study).

Importing this package is light (no torch); training and the pipeline load
when a model is fitted or used.
"""
from nnunet_synth.generators.sd_inpaint.generator import SDInpaintGenerator

__all__ = ["SDInpaintGenerator"]
