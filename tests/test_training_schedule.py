"""The *Short trainers' schedule variables, and nnUNetSynth_final_validation=0, which skips nnU-Net's validation
after training (a study sets it where its cross-eval predicts the same validation cases)."""
import pytest

from nnunet_synth.errors import SynthError
from nnunet_synth.training.schedule import ShortScheduleMixin


class RecordingTrainer:
    """Stands in for nnUNetTrainer: the mixin's constructor and validation call into it."""

    def __init__(self, plans, configuration, fold, dataset_json, device=None):
        self.log, self.validated = [], []

    def print_to_log_file(self, *args):
        self.log.append(" ".join(map(str, args)))

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.validated.append(save_probabilities)

    def on_epoch_end(self):  # as nnU-Net's: log, checkpoint, plot progress.png, next epoch
        self.log.append(f"end of epoch {self.current_epoch}")
        self.logger.plot_progress_png("fold_0")
        self.current_epoch += 1


class PlotCountingLogger:
    def __init__(self):
        self.plotted = []

    def plot_progress_png(self, output_folder):
        self.plotted.append(output_folder)


class ShortTrainer(ShortScheduleMixin, RecordingTrainer):
    pass


def test_schedule_comes_from_the_variables(monkeypatch):
    monkeypatch.setenv("nnUNetSynth_epochs", "3")
    monkeypatch.setenv("nnUNetSynth_iterations_per_epoch", "7")
    monkeypatch.delenv("nnUNetSynth_val_iterations_per_epoch", raising=False)
    trainer = ShortTrainer({}, "2d", 0, {})
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (3, 7, 2)
    assert trainer.save_every == 1


@pytest.mark.parametrize("value, validates", [(None, True), ("1", True), ("0", False)])
def test_final_validation_runs_unless_switched_off(monkeypatch, value, validates):
    if value is None:
        monkeypatch.delenv("nnUNetSynth_final_validation", raising=False)
    else:
        monkeypatch.setenv("nnUNetSynth_final_validation", value)
    trainer = ShortTrainer({}, "2d", 0, {})
    trainer.perform_actual_validation(True)
    assert trainer.validated == ([True] if validates else [])
    skipped = [line for line in trainer.log if "final validation skipped" in line]
    assert bool(skipped) != validates
    if skipped:
        assert "nnUNetv2_train ... --val" in skipped[0]


def test_progress_is_plotted_after_the_last_epoch_only(monkeypatch):
    monkeypatch.setenv("nnUNetSynth_epochs", "3")
    trainer = ShortTrainer({}, "2d", 0, {})
    trainer.current_epoch, trainer.logger = 0, PlotCountingLogger()
    plots_after = []
    for _ in range(3):
        trainer.on_epoch_end()
        plots_after.append(len(trainer.logger.plotted))
        assert "plot_progress_png" not in vars(trainer.logger)  # the logger's own method is back
    assert plots_after == [0, 0, 1] and trainer.logger.plotted == ["fold_0"]
    assert trainer.log == ["end of epoch 0", "end of epoch 1", "end of epoch 2"]  # the rest of every epoch end ran


@pytest.mark.parametrize("variable, value", [("nnUNetSynth_final_validation", "no"),
                                             ("nnUNetSynth_epochs", "0"), ("nnUNetSynth_epochs", "two")])
def test_bad_values_are_refused_before_training(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SynthError, match=f"{variable}="):
        ShortTrainer({}, "2d", 0, {})


def test_seed_makes_the_draws_repeat(monkeypatch):
    import random

    import numpy as np
    import torch

    def draws():
        ShortTrainer({}, "2d", 0, {})
        return random.random(), float(np.random.uniform()), float(torch.rand(1))

    monkeypatch.setenv("nnUNetSynth_seed", "3")
    first, again = draws(), draws()
    monkeypatch.setenv("nnUNetSynth_seed", "4")
    other = draws()
    assert first == again and all(a != b for a, b in zip(first, other))
    assert ShortTrainer({}, "2d", 0, {}).seed == 4
    monkeypatch.delenv("nnUNetSynth_seed")
    assert ShortTrainer({}, "2d", 0, {}).seed is None


@pytest.mark.parametrize("value", ["-1", "x", str(2 ** 32)])
def test_bad_seed_is_refused(monkeypatch, value):
    monkeypatch.setenv("nnUNetSynth_seed", value)
    with pytest.raises(SynthError, match="nnUNetSynth_seed="):
        ShortTrainer({}, "2d", 0, {})
