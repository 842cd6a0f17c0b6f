"""Print the folder that nnUNet_extTrainer must point to.

Use it in your shell setup:

    export nnUNet_extTrainer="$(nnunet-synth trainer-path)"
"""
from __future__ import annotations

import os


def trainer_folder() -> str:
    """The folder nnUNet_extTrainer must point to (checkout or installed wheel)."""
    import nnunet_synth_trainers

    return os.path.dirname(os.path.abspath(nnunet_synth_trainers.__file__))


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    print(trainer_folder())
    return 0
