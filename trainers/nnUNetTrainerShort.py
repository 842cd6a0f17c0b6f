"""nnUNetTrainer with a short schedule taken from environment variables.

The baseline of demos and smoke tests; see nnunet_synth.training.schedule.
"""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_synth.training.loss_weights import FiniteLossWeightsMixin
from nnunet_synth.training.schedule import ShortScheduleMixin


class nnUNetTrainerShort(ShortScheduleMixin, FiniteLossWeightsMixin, nnUNetTrainer):
    pass
