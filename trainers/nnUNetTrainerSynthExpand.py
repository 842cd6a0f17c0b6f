"""Offline expansion: train on a dataset built by `nnunet-synth expand`.

Variants set the probability that a training sample is synthetic
(``nnUNetTrainerSynthExpand`` keeps the natural ratio of the training set).
"""
from nnunet_synth.training.schedule import ShortScheduleMixin
from nnunet_synth.training.synth_expand import SynthExpandTrainer


class nnUNetTrainerSynthExpand(SynthExpandTrainer):
    pass


class nnUNetTrainerSynthExpand_syn25(SynthExpandTrainer):
    synthetic_probability = 0.25


class nnUNetTrainerSynthExpand_syn50(SynthExpandTrainer):
    synthetic_probability = 0.5


class nnUNetTrainerSynthExpand_syn75(SynthExpandTrainer):
    synthetic_probability = 0.75


class nnUNetTrainerSynthExpandShort(ShortScheduleMixin, SynthExpandTrainer):
    """Short schedule from environment variables, for demos and smoke tests."""


# the variants with the short schedule, so that a study with a [budget] can compare probabilities
class nnUNetTrainerSynthExpand_syn25Short(ShortScheduleMixin, nnUNetTrainerSynthExpand_syn25):
    pass


class nnUNetTrainerSynthExpand_syn50Short(ShortScheduleMixin, nnUNetTrainerSynthExpand_syn50):
    pass


class nnUNetTrainerSynthExpand_syn75Short(ShortScheduleMixin, nnUNetTrainerSynthExpand_syn75):
    pass
