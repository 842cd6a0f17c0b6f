"""DiffBoost's ControlNet: twins (new appearances for the real masks) from edges, the mask boundary and text.

Importing this package is light (no torch); training and the pipeline load
when a model is fitted or used.
"""
from nnunet_synth.generators.controlnet.generator import ControlNetGenerator

__all__ = ["ControlNetGenerator"]
