"""Print the folder that nnUNet_extTrainer must point to.

Use it in your shell setup:

    export nnUNet_extTrainer="$(nnunet-synth trainer-path)"
"""
from __future__ import annotations


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    from nnunet_synth.testing import trainer_folder

    print(trainer_folder())
    return 0
