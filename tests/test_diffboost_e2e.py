"""DiffBoost with real nnU-Net commands in 2D (run in the test's process): twins, training and resume (3D, with nnUNetv2_predict: test_diffboost_3d.py;
the demo's cross-eval predicts its 2D DiffBoost model with nnU-Net's predictor: test_demo_e2e.py)."""
import json
import re

import numpy as np
import pytest
import torch

from conftest import nnunet_command, use_planned
from nnunet_synth.commands.main import main as cli_main
from nnunet_synth.testing import make_standin_synthetic_dataset


def short(env, epochs):
    # Augmentation in the training process and one export process for the final validation: on a small
    # shared CPU, starting worker processes costs more than these tiny runs themselves.
    return {**env, "nnUNetSynth_epochs": str(epochs), "nnUNetSynth_iterations_per_epoch": "2",
            "nnUNetSynth_val_iterations_per_epoch": "1", "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"}


def train_one_epoch_in_process(trainer) -> None:
    """nnUNetTrainer.run_training for one epoch, without the final validation (the resumed run does that)."""
    trainer.on_train_start()
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()
    trainer.on_train_epoch_end([trainer.train_step(next(trainer.dataloader_train))
                                for _ in range(trainer.num_iterations_per_epoch)])
    with torch.no_grad():
        trainer.on_validation_epoch_start()
        trainer.on_validation_epoch_end([trainer.validation_step(next(trainer.dataloader_val))
                                         for _ in range(trainer.num_val_iterations_per_epoch)])
    trainer.on_epoch_end()
    trainer.on_train_end()


def make_trainer(cls, preprocessed):
    base = preprocessed / "Dataset901_Tiny2D"
    plans = json.loads((base / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False
    return cls(plans, "2d", 0, json.loads((base / "dataset.json").read_text()), torch.device("cpu"))


def assert_same(a, b, where=""):
    """Nested checkpoint content (dicts, lists, tensors, numbers) is equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a.cpu(), b.cpu()), where
    else:
        assert a == b, where


def new_log_text(out, sizes_before) -> str:
    return "".join(p.read_text()[sizes_before.get(p, 0):] for p in sorted(out.glob("training_log_*.txt")))


@pytest.mark.e2e
def test_2d_twins_train_predict_resume(planned_tiny_2d, nnunet_folders, tmp_path, monkeypatch):
    from nnunet_synth_trainers.nnUNetTrainerDiffBoost import nnUNetTrainerDiffBoostShort

    real = use_planned(planned_tiny_2d, nnunet_folders)
    make_standin_synthetic_dataset(real, nnunet_folders.raw, 902, k=2)
    assert cli_main(["twins", "-d", "901", "-s", "902", "-c", "2d"]) == 0

    # epoch 0 in this process, on the schedule the command line run below reads
    for key, value in short({}, 1).items():
        monkeypatch.setenv(key, value)
    first = make_trainer(nnUNetTrainerDiffBoostShort, nnunet_folders.preprocessed)
    train_one_epoch_in_process(first)
    trainer = "nnUNetTrainerDiffBoostShort"
    out = nnunet_folders.results / real.name / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    record = json.loads((out / "diffboost.json").read_text())
    assert record["settings"]["mix_mode"] == "output" and record["synthetic_dataset"] == "Dataset902_Tiny2DStandIn"
    saved = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert saved["diffboost"] == record["settings"] and saved["current_epoch"] == 1
    assert_same(saved["network_weights"], first.network.state_dict(), "weights")

    # what --c loads is the checkpoint's state: weights, optimizer (momentum), logging, epoch
    loaded = make_trainer(nnUNetTrainerDiffBoostShort, nnunet_folders.preprocessed)
    loaded.load_checkpoint(str(out / "checkpoint_final.pth"))
    assert_same(loaded.network.state_dict(), saved["network_weights"], "weights")
    assert_same(loaded.optimizer.state_dict(), saved["optimizer_state"], "optimizer")
    assert loaded.optimizer.state_dict()["state"]            # one step was taken: momentum buffers exist
    assert_same(loaded.logger.get_checkpoint(), saved["logging"], "logging")
    assert_same(saved["logging"], first.logger.get_checkpoint(), "logging")
    assert loaded.current_epoch == 1 and loaded._best_ema == saved["_best_ema"]

    # resume to two epochs with nnUNetv2_train --c: the new log starts at epoch 1, the logging continues
    sizes = {p: len(p.read_text()) for p in out.glob("training_log_*.txt")}
    (out / "progress.png").unlink()  # drawn after epoch 0, the first run's last
    nnunet_command(monkeypatch, "nnUNetv2_train", "901", "2d", "0", "-tr", trainer, "-device", "cpu", "--c",
                   env=short({}, 2))
    epochs = re.findall(r": Epoch (\d+)\s*$", new_log_text(out, sizes), re.M)
    assert epochs == ["1"], epochs
    resumed = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert resumed["current_epoch"] == 2 and resumed["diffboost"] == record["settings"]
    for key, values in saved["logging"].items():
        assert len(resumed["logging"][key]) == 2 and resumed["logging"][key][:1] == values, key
    assert np.isfinite(resumed["logging"]["train_losses"]).all() and np.isfinite(resumed["logging"]["val_losses"]).all()
    assert (out / "progress.png").is_file()  # drawn again after the resumed run's last epoch

