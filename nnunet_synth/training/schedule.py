"""Short training schedules for demos, tests and smoke runs.

nnU-Net's schedule (1000 epochs of 250 iterations) is set in the trainer's
constructor and ``nnUNetv2_train`` has no flag for it. The ``*Short`` trainers
read it from environment variables instead, in the way nnU-Net reads
``nnUNet_n_proc_DA`` and ``nnUNet_compile``:

- ``nnUNetSynth_epochs`` (default 2)
- ``nnUNetSynth_iterations_per_epoch`` (default 5)
- ``nnUNetSynth_val_iterations_per_epoch`` (default 2)
- ``nnUNetSynth_final_validation`` (default 1): 0 skips nnU-Net's validation of
  the fold after training (``fold_F/validation``). A study sets it for the
  arms its own cross-eval evaluates on the same validation cases, where
  nnU-Net's pass would be the same work twice. ``nnUNetv2_train ... --val``
  runs the validation later (with the variable unset).
- ``nnUNetSynth_seed`` (default: unset, nnU-Net's unseeded training): seeds
  Python's, NumPy's and torch's generators before the trainer is built, so
  weight initialisation, patch sampling and augmentation are drawn from it. On
  a CPU with ``nnUNet_n_proc_DA=0`` (augmentation in the training process) a
  seeded training is reproducible; augmentation workers draw their own
  numbers. A study's repeat R trains with seed ``[budget].seed + R``.

The values in force are written to the training log, so a run documents itself.

A short schedule draws nnU-Net's ``progress.png`` once, after its last epoch.
nnU-Net redraws it after every epoch: a 3000 x 5400-pixel figure that takes
about 1 s on a CPU, a sixth of an epoch of the demo's trainings. A run stopped
early has its checkpoints and ``training_log``, but the plot of an earlier run
or none.
"""
from __future__ import annotations

import os

import torch

from nnunet_synth.errors import SynthError

SCHEDULE_VARIABLES = {
    "num_epochs": ("nnUNetSynth_epochs", 2),
    "num_iterations_per_epoch": ("nnUNetSynth_iterations_per_epoch", 5),
    "num_val_iterations_per_epoch": ("nnUNetSynth_val_iterations_per_epoch", 2),
}


FINAL_VALIDATION_VARIABLE = "nnUNetSynth_final_validation"
SEED_VARIABLE = "nnUNetSynth_seed"


def _integer(variable: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SynthError(f"environment variable {variable}={raw!r} is not an integer") from None


def seed_from_environment() -> int | None:
    raw = os.environ.get(SEED_VARIABLE)
    if raw is None:
        return None
    value = _integer(SEED_VARIABLE, raw)
    if not 0 <= value < 2 ** 32:
        raise SynthError(f"environment variable {SEED_VARIABLE}={value} must lie in 0..2**32-1")
    return value


def final_validation_from_environment() -> bool:
    raw = os.environ.get(FINAL_VALIDATION_VARIABLE, "1")
    if raw not in ("0", "1"):
        raise SynthError(f"environment variable {FINAL_VALIDATION_VARIABLE}={raw!r} must be 0 or 1")
    return raw == "1"


def schedule_from_environment() -> dict[str, int]:
    schedule = {}
    for attribute, (variable, default) in SCHEDULE_VARIABLES.items():
        value = _integer(variable, os.environ.get(variable, str(default)))
        if value < 1:
            raise SynthError(f"environment variable {variable}={value} must be at least 1")
        schedule[attribute] = value
    return schedule


class ShortScheduleMixin:
    """Put before an nnU-Net trainer class in the bases to give it the short schedule."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        self.seed = seed_from_environment()
        if self.seed is not None:
            from accelerate.utils import set_seed

            set_seed(self.seed)  # Python, NumPy, torch: before nnU-Net builds anything that draws random numbers
        super().__init__(plans, configuration, fold, dataset_json, device)
        for attribute, value in schedule_from_environment().items():
            setattr(self, attribute, value)
        # Checkpoints every epoch, so that a short run can be resumed with --c.
        self.save_every = 1
        self.final_validation = final_validation_from_environment()

    def on_train_start(self):
        super().on_train_start()
        self.print_to_log_file(
            f"short schedule: {self.num_epochs} epochs x {self.num_iterations_per_epoch} iterations "
            f"({self.num_val_iterations_per_epoch} validation iterations)"
            + (f", seed {self.seed}" if self.seed is not None else ""))

    def on_epoch_end(self):
        if self.current_epoch == self.num_epochs - 1:
            return super().on_epoch_end()
        # nnU-Net's epoch end (log lines, checkpoints) without its progress plot: an instance attribute
        # hides the logger's method for this call only
        self.logger.plot_progress_png = lambda output_folder: None
        try:
            super().on_epoch_end()
        finally:
            del self.logger.plot_progress_png

    def perform_actual_validation(self, save_probabilities: bool = False):
        if not self.final_validation:
            self.print_to_log_file(f"final validation skipped ({FINAL_VALIDATION_VARIABLE}=0); run it later with "
                                   f"nnUNetv2_train ... --val and the variable unset")
            return
        super().perform_actual_validation(save_probabilities)
