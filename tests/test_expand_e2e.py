"""The vertical slice of issue 2 with real nnU-Net commands: expand on a tiny 2D dataset; train, validate, find the
best configuration and predict with the demo's expanded dataset (conftest's demo_run)."""
import json

import pytest
import torch
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

from conftest import copy_results, nnunet_command, run_command, use_planned, venv_command
from nnunet_synth.errors import SynthError
from nnunet_synth.splits import default_folds
from nnunet_synth.testing import make_standin_synthetic_dataset


def in_process_split(dataset_name: str, fold: int, trainer: str = "nnUNetTrainerSynthExpand"):
    """A trainer's do_split (nnUNetTrainerSynthExpand's by default), run in this process on the preprocessed
    expanded dataset."""
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(dataset_name, "2d", fold, trainer, device=torch.device("cpu"))
    return trainer.do_split()


@pytest.mark.e2e
def test_expand_writes_leak_free_folds_and_refuses_leaky_ones(planned_tiny_2d, nnunet_folders):
    env = nnunet_folders.env()
    real = use_planned(planned_tiny_2d, nnunet_folders)
    assert real.name == "Dataset901_Tiny2D" and len(list((real / "labelsTr").iterdir())) == 10

    case_ids = sorted(p.name[:-4] for p in (real / "labelsTr").iterdir())
    folds = default_folds(case_ids)
    synth = make_standin_synthetic_dataset(real, nnunet_folders.raw, 902, k=2, trained_on=folds[0]["train"])
    verify_dataset_integrity(str(synth), num_processes=1)

    proc = run_command([venv_command("nnunet-synth"), "expand", "-d", "901", "-s", "902", "-o", "903",
                        "--preprocess", "2d", "-np", "1"], env)
    assert "folds [1, 2, 3, 4] are refused" in proc.stdout
    expanded = nnunet_folders.raw / "Dataset903_Tiny2DExpanded"
    verify_dataset_integrity(str(expanded), num_processes=1)
    # real images are referenced, not copied
    assert not (expanded / "imagesTr").exists()

    splits = json.loads((nnunet_folders.preprocessed / expanded.name / "splits_final.json").read_text())
    manifest = json.loads((expanded / "synthesis.json").read_text())
    sources = {k: v["source_case"] for k, v in manifest["cases"].items()}
    assert len(splits) == 5
    for i, (real_fold, fold) in enumerate(zip(folds, splits)):
        assert set(fold["val"]) == set(real_fold["val"])           # validation: real cases only, as before
        assert not set(fold["val"]) & set(sources)
        syn_train = [c for c in fold["train"] if c in sources]
        assert all(sources[c] not in fold["val"] for c in syn_train)
        assert set(real_fold["train"]) <= set(fold["train"])
        # folds 1-4 are refused: their entries hold real cases only, so the split file itself is leak-free
        assert len(syn_train) == (2 * len(real_fold["train"]) if i == 0 else 0)

    # fold 1 validates on cases the generator was trained on: refused. The trainer's own do_split runs
    # in process (test_expanded_model_trains_validates_and_predicts shows nnUNetv2_train calls it).
    with pytest.raises(SynthError, match="fold 1 of Dataset903_Tiny2DExpanded was refused"):
        in_process_split(expanded.name, 1)
    # any other trainer reads the same splits_final.json: fold 1 trains on real cases only
    train, val = in_process_split(expanded.name, 1, "nnUNetTrainer")
    assert sorted(train) == sorted(folds[1]["train"]) and sorted(val) == sorted(folds[1]["val"])
    # a splits_final.json edited by hand after expand: fold 0 now validates on a case the generator
    # was trained on (its synthetic cases taken out of training)
    splits_file = nnunet_folders.preprocessed / expanded.name / "splits_final.json"
    moved = folds[1]["val"][0]
    edited = json.loads(splits_file.read_text())
    edited[0] = {"train": [c for c in edited[0]["train"] if c != moved and sources.get(c) != moved],
                 "val": edited[0]["val"] + [moved]}
    splits_file.write_text(json.dumps(edited))
    with pytest.raises(SynthError, match=f"fold 0 of Dataset903_Tiny2DExpanded was refused: .*trained on {moved}"):
        in_process_split(expanded.name, 0)



@pytest.mark.e2e
def test_expanded_model_trains_validates_and_predicts(demo_run, tmp_path, monkeypatch):
    """The demo's expansion training (Dataset705: Dataset700's real cases + fold 0's kept twins). The study skipped
    nnU-Net's validation after training (its cross-eval predicts the same cases): `nnUNetv2_train --val` adds it."""
    demo = demo_run.folders()
    expanded = next(demo.raw.glob("Dataset705_*"))
    real = next(demo.raw.glob("Dataset700_*"))
    fold0 = json.loads((demo.preprocessed / expanded.name / "splits_final.json").read_text())[0]
    sources = {k: v["source_case"] for k, v in json.loads((expanded / "synthesis.json").read_text())["cases"].items()}
    n_synthetic = sum(c in sources for c in fold0["train"])
    n_real = len(fold0["train"]) - n_synthetic
    trainer = "nnUNetTrainerSynthExpandShort__nnUNetPlans__2d"
    result = demo.results / expanded.name / trainer / "fold_0"
    assert (result / "checkpoint_final.pth").is_file() and not (result / "validation").exists()
    log = "".join(p.read_text() for p in result.glob("training_log_*.txt"))
    assert (f"split check passed: {n_real} real + {n_synthetic} synthetic training cases, "
            f"{len(fold0['val'])} real validation cases") in log
    assert n_synthetic > 0 and not set(fold0["val"]) & set(sources)
    assert "samples drawn this epoch:" in log

    # nnU-Net's own commands, unchanged, on a copy of the results (the demo's folder stays as it was): their
    # console scripts' entry points, run in this process (the worker has imported nnU-Net already)
    results = copy_results(demo.results / expanded.name, tmp_path / "results" / expanded.name).parent
    for key, value in {**demo.env(), "nnUNet_results": str(results)}.items():
        monkeypatch.setenv(key, value)
    nnunet_command(monkeypatch, "nnUNetv2_train", "705", "2d", "0", "-tr", "nnUNetTrainerSynthExpandShort", "--val",
                   "-device", "cpu")
    validated = json.loads((results / expanded.name / trainer / "fold_0" / "validation" / "summary.json").read_text())
    assert {c["prediction_file"].split("/")[-1] for c in validated["metric_per_case"]} == \
        {f"{c}.nii.gz" for c in fold0["val"]}
    nnunet_command(monkeypatch, "nnUNetv2_find_best_configuration", "705", "-c", "2d", "-tr",
                   "nnUNetTrainerSynthExpandShort", "-f", "0", "--disable_ensembling", "-np", "1")
    assert (results / expanded.name / "inference_information.json").is_file()
    pred_in, pred_out = tmp_path / "pred_in", tmp_path / "pred_out"
    pred_in.mkdir()
    for c in fold0["val"][:2]:
        (pred_in / f"{c}_0000.nii.gz").write_bytes((real / "imagesTr" / f"{c}_0000.nii.gz").read_bytes())
    nnunet_command(monkeypatch, "nnUNetv2_predict", "-i", str(pred_in), "-o", str(pred_out), "-d", "705", "-c", "2d",
                   "-f", "0", "-tr", "nnUNetTrainerSynthExpandShort", "-device", "cpu", "-npp", "1", "-nps", "1")
    assert sorted(p.name for p in pred_out.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in fold0["val"][:2])
