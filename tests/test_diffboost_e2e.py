"""DiffBoost with real nnU-Net commands: twins, training, prediction and resume, in 2D and 3D."""
import json

import pytest
import torch

from conftest import run_command, venv_command
from nnunet_synth.testing import make_raw_dataset_2d, make_raw_dataset_3d, make_standin_synthetic_dataset


def short(env, epochs):
    # Augmentation in the training process and one export process for the final validation: on a small
    # shared CPU, starting worker processes costs more than these tiny runs themselves.
    return {**env, "nnUNetSynth_epochs": str(epochs), "nnUNetSynth_iterations_per_epoch": "2",
            "nnUNetSynth_val_iterations_per_epoch": "1", "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"}


def predict_one(real, ending, configuration, trainer, tmp_path, env):
    """nnUNetv2_predict, unchanged, on the first real image."""
    images = tmp_path / "in"
    images.mkdir()
    (images / f"case_000_0000{ending}").write_bytes((real / "imagesTr" / f"case_000_0000{ending}").read_bytes())
    run_command([venv_command("nnUNetv2_predict"), "-i", str(images), "-o", str(tmp_path / "pred"), "-d", real.name,
                 "-c", configuration, "-f", "0", "-tr", trainer, "-device", "cpu", "--disable_tta",
                 "-npp", "1", "-nps", "1"], env)
    assert (tmp_path / "pred" / f"case_000{ending}").is_file()


@pytest.mark.e2e
def test_2d_twins_train_predict_resume(nnunet_folders, tmp_path):
    env = nnunet_folders.env()
    real = make_raw_dataset_2d(nnunet_folders.raw, 901, n_cases=5, shape=(40, 40))
    run_command([venv_command("nnUNetv2_plan_and_preprocess"), "-d", "901", "-c", "2d", "-np", "1", "-npfp", "1"], env)
    make_standin_synthetic_dataset(real, nnunet_folders.raw, 902, k=2)
    run_command([venv_command("nnunet-synth"), "twins", "-d", "901", "-s", "902", "-c", "2d"], env)

    trainer = "nnUNetTrainerDiffBoostShort"
    train = [venv_command("nnUNetv2_train"), "901", "2d", "0", "-tr", trainer, "-device", "cpu"]
    run_command(train, short(env, 1))
    out = nnunet_folders.results / real.name / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    record = json.loads((out / "diffboost.json").read_text())
    assert record["settings"]["mix_mode"] == "output" and record["synthetic_dataset"] == "Dataset902_Tiny2DStandIn"
    checkpoint = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["diffboost"] == record["settings"] and checkpoint["current_epoch"] == 1

    # resume to two epochs: continues from the checkpoint with the same settings
    run_command(train + ["--c"], short(env, 2))
    checkpoint = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 2 and checkpoint["diffboost"] == record["settings"]
    logs = "".join(p.read_text() for p in out.glob("training_log_*.txt"))
    assert "Epoch 1" in logs

    # prediction is nnU-Net's, unchanged
    predict_one(real, ".png", "2d", trainer, tmp_path, env)


@pytest.mark.e2e
def test_3d_input_mix_train_predict(nnunet_folders, tmp_path):
    env = nnunet_folders.env()
    real = make_raw_dataset_3d(nnunet_folders.raw, 911, n_cases=5, shape=(12, 24, 24))
    run_command([venv_command("nnUNetv2_plan_and_preprocess"), "-d", "911", "-c", "3d_fullres", "-np", "1",
                 "-npfp", "1"], env)
    make_standin_synthetic_dataset(real, nnunet_folders.raw, 912, k=1)
    run_command([venv_command("nnunet-synth"), "twins", "-d", "911", "-s", "912", "-c", "3d_fullres"], env)

    trainer = "nnUNetTrainerDiffBoostInputMixShort"
    run_command([venv_command("nnUNetv2_train"), "911", "3d_fullres", "0", "-tr", trainer, "-device", "cpu"],
                short(env, 1))
    out = nnunet_folders.results / real.name / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
    assert json.loads((out / "diffboost.json").read_text())["settings"]["mix_mode"] == "input"

    predict_one(real, ".nii.gz", "3d_fullres", trainer, tmp_path, env)
