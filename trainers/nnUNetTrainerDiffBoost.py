"""DiffBoost trainers: real samples patch-mixed with synthetic twins (logic: nnunet_synth.diffboost.trainer).

Preprocess the twins first: ``nnunet-synth twins -d REAL_ID -s SYNTH_ID -c CONFIG``.
Variants only set class attributes; docs/diffboost.md shows how to add more.
"""
from nnunet_synth.diffboost.trainer import DiffBoostTrainer
from nnunet_synth.training.schedule import ShortScheduleMixin


class nnUNetTrainerDiffBoost(DiffBoostTrainer):
    """Output-level mixing (the published DiffBoost code), alpha 0.6, cells of 1/6 of the patch."""


class nnUNetTrainerDiffBoostInputMix(DiffBoostTrainer):
    """Input-level mixing (the DiffBoost paper text)."""
    mix_mode = "input"


class nnUNetTrainerDiffBoost_alpha0p5(nnUNetTrainerDiffBoost):
    alpha = 0.5


class nnUNetTrainerDiffBoost_alpha0p8(nnUNetTrainerDiffBoost):
    alpha = 0.8


class nnUNetTrainerDiffBoost_r16(nnUNetTrainerDiffBoost):
    patch_edge = 16


class nnUNetTrainerDiffBoost_r32(nnUNetTrainerDiffBoost):
    patch_edge = 32


class nnUNetTrainerDiffBoost_r64(nnUNetTrainerDiffBoost):
    patch_edge = 64


class nnUNetTrainerDiffBoost_syncIntensity(nnUNetTrainerDiffBoost):
    synchronize_intensity = True


class nnUNetTrainerDiffBoostInputMix_alpha0p8(nnUNetTrainerDiffBoostInputMix):
    alpha = 0.8


class nnUNetTrainerDiffBoostShort(ShortScheduleMixin, nnUNetTrainerDiffBoost):
    """Short schedule from environment variables, for demos and tests."""


class nnUNetTrainerDiffBoostInputMixShort(ShortScheduleMixin, nnUNetTrainerDiffBoostInputMix):
    """Short schedule from environment variables, for demos and tests."""
