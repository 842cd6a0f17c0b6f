"""The lung patch-DDPM recipe's whole command chain on tiny 3D data: models, expanded folds, cross-eval, resume."""
import json
import sys
from pathlib import Path

import pytest

from conftest import run_command
from nnunet_synth.testing import make_raw_dataset_3d

RECIPE = Path(__file__).resolve().parents[1] / "dataset_conversion" / "recipe_lung_patch_ddpm.py"


@pytest.mark.e2e
def test_recipe_chain_tiny(nnunet_folders, tmp_path):
    env = nnunet_folders.env()
    env.update(nnUNetSynth_epochs="1", nnUNetSynth_iterations_per_epoch="2", nnUNetSynth_val_iterations_per_epoch="1")
    make_raw_dataset_3d(nnunet_folders.raw, 951, n_cases=6, shape=(16, 32, 32))
    make_raw_dataset_3d(nnunet_folders.raw, 960, name="Tiny3DTest", n_cases=2, shape=(16, 32, 32), seed=7)
    workdir = tmp_path / "work"
    command = [sys.executable, str(RECIPE), "-d", "951", "-w", str(workdir), "--short", "--device", "cpu",
               "--ddpm-args", "--patch-size 16 --channels 8 16 --res-blocks 1 --batch-size 2 --train-steps 3",
               "--generate-args", "--steps 2 --sampling full", "--worst", "1", "--ranking-folds", "1",
               "--test", "held_out=960", "--disable-tta", "-np", "1"]
    run_command(command, env, timeout=1200)

    results = nnunet_folders.results
    trained = {"real_only": "Dataset951_Tiny3D/nnUNetTrainerShort__nnUNetPlans__3d_fullres",
               "synthetic_only": "Dataset956_Tiny3DSynthOnly/nnUNetTrainerSynthExpandShort__nnUNetPlans__3d_fullres",
               "real_synthetic": "Dataset957_Tiny3DRealSynth/nnUNetTrainerSynthExpandShort__nnUNetPlans__3d_fullres",
               "real_targeted": "Dataset958_Tiny3DRealTargeted/nnUNetTrainerSynthExpandShort__nnUNetPlans__3d_fullres"}
    for folder in trained.values():
        assert (results / folder / "fold_0" / "checkpoint_final.pth").is_file(), folder

    real_splits = json.loads((nnunet_folders.preprocessed / "Dataset951_Tiny3D" / "splits_final.json").read_text())
    real_train, real_val = set(real_splits[0]["train"]), set(real_splits[0]["val"])
    # targeted twins come from the worst-ranked case of fold 1's validation, one of fold 0's training cases
    # (one ranking fold keeps the test short; the recipe's default ranks on folds 1-4)
    targeted = json.loads((nnunet_folders.raw / "Dataset954_Tiny3DTargetedTwins" / "synthesis.json").read_text())
    targeted_sources = {c["source_case"] for c in targeted["cases"].values()}
    assert len(targeted_sources) == 1 and targeted_sources <= set(real_splits[1]["val"]) <= real_train
    for name, only_synthetic in (("Dataset956_Tiny3DSynthOnly", True), ("Dataset957_Tiny3DRealSynth", False),
                                 ("Dataset958_Tiny3DRealTargeted", False)):
        fold0 = json.loads((nnunet_folders.preprocessed / name / "splits_final.json").read_text())[0]
        sources = {k: v["source_case"] for k, v in
                   json.loads((nnunet_folders.raw / name / "synthesis.json").read_text())["cases"].items()}
        assert set(fold0["val"]) == real_val, name                         # validation: the real fold-0 cases only
        synthetic_train = {c for c in fold0["train"] if c in sources}
        assert synthetic_train and all(sources[c] in real_train for c in synthetic_train), name
        assert set(fold0["train"]) - synthetic_train == (set() if only_synthetic else real_train), name

    cross = workdir / "cross_eval"
    summary = json.loads((cross / "summary.json").read_text())
    assert set(summary["models"]) == set(trained)
    assert set(summary["results"]["held_out"]) == set(trained)
    per_case = (cross / "per_case.csv").read_text()
    assert all(model in per_case for model in trained)
    report = (cross / "report.md").read_text()
    assert all(model in report for model in trained)

    again = run_command(command, env, timeout=300)
    n_steps = 13  # plan, fit, twins, real-only, ranking fold, targeted, 3 expands, 3 trainings, cross-eval
    assert again.stdout.count("done before, skipped") == n_steps
    assert "finished in" not in again.stdout
