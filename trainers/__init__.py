"""Thin nnU-Net trainer modules.

nnU-Net imports every module in this folder when ``nnUNet_extTrainer`` points
here, so each module only binds names to classes defined in ``nnunet_synth``.
"""
