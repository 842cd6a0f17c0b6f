"""Twin preprocessing and the trainer's guards, in process, on one tiny planned 2D dataset."""
import json
import shutil
from pathlib import Path

import blosc2
import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from conftest import run_command, venv_command
from nnunet_synth.manifest import TWINS_FILE as TWIN_MANIFEST, TWINS_FOLDER as TWIN_FOLDER
from nnunet_synth.diffboost.trainer import DiffBoostTrainer
from nnunet_synth.diffboost.twins import preprocess_twins
from nnunet_synth.errors import SynthError
from nnunet_synth.splits import default_folds
from nnunet_synth.testing import make_nnunet_folders, make_raw_dataset_2d, make_standin_synthetic_dataset


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """Dataset901 (6 cases, 2d planned and preprocessed) and twin datasets 902 (exact copies), 903 (noisy)."""
    folders = make_nnunet_folders(tmp_path_factory.mktemp("diffboost"))
    real = make_raw_dataset_2d(folders.raw, 901, n_cases=6, shape=(40, 40))
    run_command([venv_command("nnUNetv2_plan_and_preprocess"), "-d", "901", "-c", "2d", "-np", "1", "-npfp", "1"],
                folders.env())
    make_standin_synthetic_dataset(real, folders.raw, 902, k=1, noise=0.0)
    make_standin_synthetic_dataset(real, folders.raw, 903, k=2, noise=10.0)
    return folders


@pytest.fixture
def env(planned, monkeypatch):
    for key, value in planned.env().items():
        monkeypatch.setenv(key, value)
    yield planned
    shutil.rmtree(config_folder(planned) / TWIN_FOLDER, ignore_errors=True)


def config_folder(folders):
    return folders.preprocessed / "Dataset901_Tiny2D" / "nnUNetPlans_2d"


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else None


def test_exact_twins_preprocess_to_the_real_preprocessed_case(env):
    run_command([venv_command("nnunet-synth"), "twins", "-d", "901", "-s", "902", "-c", "2d"], env.env())
    folder = config_folder(env)
    twins = json.loads((folder / TWIN_FOLDER / TWIN_MANIFEST).read_text())
    assert twins["configuration"] == "2d" and twins["synthetic_dataset"] == "Dataset902_Tiny2DStandIn"
    assert sorted(twins["twins"]) == [f"case_{i:03d}" for i in range(6)] and twins["real_only"] == []
    for case, (twin_id,) in twins["twins"].items():
        real, twin = blosc2.open(str(folder / f"{case}.b2nd")), blosc2.open(str(folder / TWIN_FOLDER / f"{twin_id}.b2nd"))
        assert twin.shape == real.shape and twin.chunks == real.chunks and twin.blocks == real.blocks
        np.testing.assert_allclose(twin[:], real[:], atol=1e-5)
    # nnU-Net does not take twins for cases
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    assert sorted(nnUNetDatasetBlosc2.get_identifiers(str(folder))) == sorted(twins["twins"])


def test_twin_with_another_mask_is_refused_and_nothing_changes(env, tmp_path):
    preprocess_twins("901", "902", "2d", progress=False)
    before = snapshot(config_folder(env))
    bad = env.raw / "Dataset904_Tiny2DStandIn"
    shutil.copytree(env.raw / "Dataset902_Tiny2DStandIn", bad)
    manifest = json.loads((bad / "synthesis.json").read_text())
    (bad / "synthesis.json").write_text(json.dumps(manifest))
    from skimage import io
    label = bad / "labelsTr" / "case_003_syn000.png"
    seg = io.imread(label)
    seg[:5, :5] = 1 - seg[:5, :5]
    io.imsave(label, seg, check_contrast=False)
    with pytest.raises(SynthError, match=r"case_003_syn000.*differs from the label of real case 'case_003'"):
        preprocess_twins("901", "904", "2d", progress=False)
    assert snapshot(config_folder(env)) == before
    assert not [p for p in config_folder(env).iterdir() if p.name.startswith(".tmp")]


def test_cases_without_twins_need_allow_real_only(env):
    partial = make_standin_synthetic_dataset(env.raw / "Dataset901_Tiny2D", env.raw, 905, k=1,
                                             cases=["case_000", "case_001"])
    with pytest.raises(SynthError, match=r"4 real case\(s\) have no kept twins .*--allow-real-only"):
        preprocess_twins("901", "905", "2d", progress=False)
    assert not (config_folder(env) / TWIN_FOLDER).exists()
    preprocess_twins("901", partial.name, "2d", allow_real_only=True, progress=False)
    twins = json.loads((config_folder(env) / TWIN_FOLDER / TWIN_MANIFEST).read_text())
    assert sorted(twins["twins"]) == ["case_000", "case_001"] and len(twins["real_only"]) == 4


def test_unknown_configuration_and_plans_are_refused(env):
    with pytest.raises(SynthError, match="no configuration '3d_fullres'"):
        preprocess_twins("901", "902", "3d_fullres", progress=False)
    with pytest.raises(SynthError, match="nnUNetOtherPlans.json: missing"):
        preprocess_twins("901", "902", "2d", plans_identifier="nnUNetOtherPlans", progress=False)


def make_trainer(cls, folders, fold=0):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    base = folders.preprocessed / "Dataset901_Tiny2D"
    plans = load_json(str(base / "nnUNetPlans.json"))
    plans["continue_training"] = False
    trainer = cls(plans, "2d", fold, load_json(str(base / "dataset.json")), torch.device("cpu"))
    trainer.initialize()
    return trainer


def train_and_val_keys(trainer):
    return trainer.do_split()


def test_trainer_guards(env):
    trainer = make_trainer(DiffBoostTrainer, env)
    tr, val = train_and_val_keys(trainer)
    with pytest.raises(SynthError, match="twins.json: missing; preprocess the twins"):
        trainer.open_twins(tr, val)

    preprocess_twins("901", "903", "2d", progress=False)
    store = trainer.open_twins(tr, val)
    assert set(store.twins) == set(tr) and all(len(v) == 2 for v in store.twins.values())
    record = json.loads((Path(trainer.output_folder) / "diffboost.json").read_text())
    assert record["twin_manifest_hash"].startswith("sha256:") and record["settings"]["alpha"] == 0.6

    manifest_path = config_folder(env) / TWIN_FOLDER / TWIN_MANIFEST
    tm = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**tm, "plans_fingerprint": "sha256:other"}))
    with pytest.raises(SynthError, match="preprocessed with other plans"):
        trainer.open_twins(tr, val)


def test_generator_trained_on_validation_cases_is_refused(env):
    folds = default_folds([f"case_{i:03d}" for i in range(6)])
    make_standin_synthetic_dataset(env.raw / "Dataset901_Tiny2D", env.raw, 906, k=1, trained_on=folds[1]["train"])
    preprocess_twins("901", "906", "2d", progress=False)
    fold0 = make_trainer(DiffBoostTrainer, env, fold=0)   # fold 1's training cases include fold 0's validation
    with pytest.raises(SynthError, match=r"fold 0: the generator of Dataset906_Tiny2DStandIn was trained on"):
        fold0.open_twins(*train_and_val_keys(fold0))

    class Allowed(DiffBoostTrainer):
        allow_generator_leakage = True
    fold0 = make_trainer(Allowed, env, fold=0)
    assert fold0.open_twins(*train_and_val_keys(fold0)).twins
    fold1 = make_trainer(DiffBoostTrainer, env, fold=1)   # trained on exactly this fold's training cases: fine
    assert fold1.open_twins(*train_and_val_keys(fold1)).twins


class AlphaOne(DiffBoostTrainer):
    alpha = 1.0


class AlphaZero(DiffBoostTrainer):
    alpha = 0.0


@pytest.mark.parametrize("cls", [AlphaOne, AlphaZero])
def test_output_mix_at_alpha_one_is_nnunet_loss_on_real_and_at_zero_on_twin(env, cls, monkeypatch):
    preprocess_twins("901", "903", "2d", progress=False)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")          # batches in this process
    mixer = make_trainer(cls, env)
    mixer.dataloader_train, _ = mixer.get_dataloaders()
    batch = next(mixer.dataloader_train)
    assert bool(batch["mix_mask"].all()) == (cls is AlphaOne) and bool((~batch["mix_mask"]).all()) == (cls is AlphaZero)

    plain = make_trainer(nnUNetTrainer, env)
    plain.network.load_state_dict(mixer.network.state_dict())
    plain_batch = {"data": batch["data"] if cls is AlphaOne else batch["twin"], "target": batch["target"]}
    expected = plain.train_step(plain_batch)["loss"]
    got = mixer.train_step(batch)["loss"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert mixer.loss.mask is None       # validation afterwards uses the plain loss


def test_resume_requires_the_same_settings(env, tmp_path):
    trainer = make_trainer(DiffBoostTrainer, env)
    checkpoint = str(tmp_path / "checkpoint_latest.pth")
    trainer.save_checkpoint(checkpoint)
    assert torch.load(checkpoint, weights_only=False)["diffboost"] == trainer.diffboost_settings()
    make_trainer(DiffBoostTrainer, env).load_checkpoint(checkpoint)
    with pytest.raises(SynthError, match=r"written with DiffBoost settings .*\"alpha\": 0.6.* resume with the same"):
        make_trainer(AlphaOne, env).load_checkpoint(checkpoint)
    plain = str(tmp_path / "plain.pth")
    make_trainer(nnUNetTrainer, env).save_checkpoint(plain)
    with pytest.raises(SynthError, match="has no DiffBoost settings"):
        make_trainer(DiffBoostTrainer, env).load_checkpoint(plain)
