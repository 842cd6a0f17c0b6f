"""Print the folder that nnUNet_extTrainer must point to.

Use it in your shell setup:

    export nnUNet_extTrainer="$(nnunet-synth trainer-path)"
"""
from __future__ import annotations

from nnunet_synth.environment import trainer_folder


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    print(trainer_folder())
    return 0
