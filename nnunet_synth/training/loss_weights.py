"""Refuse plans for which nnU-Net's deep-supervision loss is NaN.

nnU-Net weights the deep-supervision outputs 1, 1/2, 1/4, ..., sets the
lowest output's weight to 0 and divides by the sum. A network of two stages
(a patch with room for one pooling only: small 2D images, thin 3D crops) has
a single output, whose weight becomes 0 / 0 = NaN, and every loss of the
training is NaN (MIC-DKFZ/nnUNet#2670). nnU-Net trains on regardless and saves
a model that predicts nothing. The trainers of this package stop instead,
while nnU-Net builds the loss, before the first iteration.
"""
from __future__ import annotations

import numpy as np

from nnunet_synth.errors import SynthError


def check_loss_weights(weights, where: str, n_stages, patch_size) -> None:
    """Raise if deep-supervision ``weights`` (None: no deep supervision) hold a value that is not finite."""
    if weights is None or np.all(np.isfinite(np.asarray(weights, dtype=float))):
        return
    raise SynthError(f"{where}: nnU-Net's deep-supervision weights are {[float(w) for w in weights]}, so every loss "
                     f"would be NaN: the plans' network has {n_stages} stages (patch size {list(patch_size)}), and "
                     f"nnU-Net divides by zero below 3 (MIC-DKFZ/nnUNet#2670); plan larger images or a larger "
                     f"patch, so that the network gets at least 3 stages")


class FiniteLossWeightsMixin:
    """Put before nnUNetTrainer (or a subclass of it) in the bases: ``_build_loss`` refuses NaN weights."""

    def _build_loss(self):
        loss = super()._build_loss()
        cm = self.configuration_manager
        check_loss_weights(getattr(loss, "weight_factors", None),
                           f"{self.plans_manager.dataset_name} {self.configuration_name}",
                           cm.network_arch_init_kwargs.get("n_stages"), cm.patch_size)
        return loss
