"""Twin preprocessing and the trainer's guards, in process, on one tiny planned 2D dataset."""
import json
import shutil
from pathlib import Path

import blosc2
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from conftest import run_command, use_planned, venv_command
from nnunet_synth.manifest import TWINS_FILE as TWIN_MANIFEST, TWINS_FOLDER as TWIN_FOLDER
from nnunet_synth.diffboost.mask import draw_mix_mask
from nnunet_synth.diffboost.trainer import DiffBoostTrainer
from nnunet_synth.diffboost.twins import preprocess_twins
from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import MANIFEST_FILE, file_hash
from nnunet_synth.splits import default_folds
from nnunet_synth.testing import make_nnunet_folders, make_standin_synthetic_dataset


@pytest.fixture(scope="module")
def planned(planned_tiny_2d, tmp_path_factory):
    """The session's Dataset901 (10 cases, 2d planned and preprocessed) and twin datasets 902 (exact), 903 (noisy)."""
    folders = make_nnunet_folders(tmp_path_factory.mktemp("diffboost"))
    real = use_planned(planned_tiny_2d, folders)
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
    assert sorted(twins["twins"]) == [f"case_{i:03d}" for i in range(10)] and twins["real_only"] == []
    # the manifest travels with the twins: training reads this copy, whose hash twins.json records
    copy = folder / TWIN_FOLDER / MANIFEST_FILE
    raw_manifest = env.raw / "Dataset902_Tiny2DStandIn" / MANIFEST_FILE
    assert copy.read_bytes() == raw_manifest.read_bytes() and twins["synthesis_manifest_hash"] == file_hash(copy)
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
    with pytest.raises(SynthError, match=r"8 real case\(s\) have no kept twins .*--allow-real-only"):
        preprocess_twins("901", "905", "2d", progress=False)
    assert not (config_folder(env) / TWIN_FOLDER).exists()
    preprocess_twins("901", partial.name, "2d", allow_real_only=True, progress=False)
    twins = json.loads((config_folder(env) / TWIN_FOLDER / TWIN_MANIFEST).read_text())
    assert sorted(twins["twins"]) == ["case_000", "case_001"] and len(twins["real_only"]) == 8


def test_unknown_configuration_and_plans_are_refused(env):
    with pytest.raises(SynthError, match="no configuration '3d_fullres'"):
        preprocess_twins("901", "902", "3d_fullres", progress=False)
    with pytest.raises(SynthError, match="nnUNetOtherPlans.json: missing"):
        preprocess_twins("901", "902", "2d", plans_identifier="nnUNetOtherPlans", progress=False)


def copy_of_902(env, dataset_id, edit_dataset_json=None, edit_manifest=None):
    """A copy of the exact-twin dataset 902 under another id, with dataset.json / synthesis.json edited."""
    folder = env.raw / f"Dataset{dataset_id}_Tiny2DStandIn"
    shutil.copytree(env.raw / "Dataset902_Tiny2DStandIn", folder)
    for name, edit in (("dataset.json", edit_dataset_json), (MANIFEST_FILE, edit_manifest)):
        if edit is not None:
            obj = json.loads((folder / name).read_text())
            edit(obj)
            (folder / name).write_text(json.dumps(obj))
    return folder.name


@pytest.mark.parametrize("dataset_id, edit_dataset_json, edit_manifest, message", [
    (911, None, lambda m: m.update(real_dataset="Dataset999_Other"),
     r"synthesis.json: derived from Dataset999_Other, not Dataset901_Tiny2D"),
    (912, lambda d: d.update(file_ending=".bmp"), None,
     r"dataset.json: 1 channel\(s\) of '.bmp' files, but Dataset901_Tiny2D has 1 of '.png'"),
    (913, lambda d: d.update(channel_names={"0": "US", "1": "US"}), None,
     r"dataset.json: 2 channel\(s\) of '.png' files, but Dataset901_Tiny2D has 1 of '.png'"),
])
def test_twins_of_another_dataset_ending_or_channels_are_refused(env, dataset_id, edit_dataset_json, edit_manifest,
                                                                  message):
    name = copy_of_902(env, dataset_id, edit_dataset_json, edit_manifest)
    with pytest.raises(SynthError, match=message):
        preprocess_twins("901", name, "2d", progress=False)
    assert not (config_folder(env) / TWIN_FOLDER).exists()


def test_a_crop_box_that_differs_from_the_stored_one_is_refused(env):
    from batchgenerators.utilities.file_and_folder_operations import load_pickle, write_pickle
    pkl = config_folder(env) / "case_004.pkl"
    original = pkl.read_bytes()
    props = load_pickle(str(pkl))
    props["bbox_used_for_cropping"] = [[1, b[1]] for b in props["bbox_used_for_cropping"]]
    write_pickle(props, str(pkl))
    try:
        with pytest.raises(SynthError, match=r"case_004.pkl: crop box differs from the one recomputed from the raw "
                                             r"case 'case_004'.*rerun nnUNetv2_preprocess"):
            preprocess_twins("901", "902", "2d", progress=False)
    finally:
        pkl.write_bytes(original)
    assert not (config_folder(env) / TWIN_FOLDER).exists()


def cascaded_plans(env):
    """The real plans with a configuration '2d_cascade' whose previous stage is '2d'."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    plans = load_json(str(env.preprocessed / "Dataset901_Tiny2D" / "nnUNetPlans.json"))
    plans["configurations"]["2d_cascade"] = {"inherits_from": "2d", "previous_stage": "2d"}
    return plans


def test_cascaded_configurations_are_refused_by_twins_and_trainer(env):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    plans_file = env.preprocessed / "Dataset901_Tiny2D" / "nnUNetCascadePlans.json"
    plans = cascaded_plans(env)
    plans_file.write_text(json.dumps({**plans, "plans_name": "nnUNetCascadePlans"}))
    try:
        with pytest.raises(SynthError, match=r"nnUNetCascadePlans.json: configuration '2d_cascade' is cascaded "
                                             r"\(previous stage '2d'\)"):
            preprocess_twins("901", "902", "2d_cascade", plans_identifier="nnUNetCascadePlans", progress=False)
    finally:
        plans_file.unlink()
    dataset_json = load_json(str(env.preprocessed / "Dataset901_Tiny2D" / "dataset.json"))
    with pytest.raises(SynthError, match=r"DiffBoostTrainer: configuration '2d_cascade' is cascaded"):
        DiffBoostTrainer({**plans, "continue_training": False}, "2d_cascade", 0, dataset_json, torch.device("cpu"))


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


def test_trainer_guards(env, monkeypatch):
    trainer = make_trainer(DiffBoostTrainer, env)
    tr, val = train_and_val_keys(trainer)
    with pytest.raises(SynthError, match="twins.json: missing; preprocess the twins"):
        trainer.open_twins(tr, val)

    preprocess_twins("901", "903", "2d", progress=False)
    folder = config_folder(env) / TWIN_FOLDER
    # training needs no nnUNet_raw: the twins folder holds the synthesis.json it reads
    monkeypatch.delenv("nnUNet_raw")
    store = trainer.open_twins(tr, val)
    assert set(store.twins) == set(tr) and all(len(v) == 2 for v in store.twins.values())
    record = json.loads((Path(trainer.output_folder) / "diffboost.json").read_text())
    assert record["twin_manifest_hash"] == file_hash(folder / TWIN_MANIFEST) and record["settings"]["alpha"] == 0.6
    assert record["synthesis_manifest_hash"] == file_hash(folder / MANIFEST_FILE)

    def refused(message, edit, undo):
        edit()
        try:
            with pytest.raises(SynthError, match=message):
                trainer.open_twins(tr, val)
        finally:
            undo()
        trainer.open_twins(tr, val)                       # undone: accepted again

    def rewrite(path, change):
        original = path.read_bytes()
        return (lambda: path.write_text(json.dumps(change(json.loads(original))))), (lambda: path.write_bytes(original))

    copy = folder / MANIFEST_FILE
    refused(r"diffboost_twins/synthesis.json: differs from the synthesis.json the twins were made from",
            *rewrite(copy, lambda m: {**m, "generators": {g: {**v, "trained_on": []} for g, v in m["generators"].items()}}))
    refused(r"diffboost_twins/synthesis.json: missing; rerun nnunet-synth twins",
            lambda: copy.rename(folder / "aside.json"), lambda: (folder / "aside.json").rename(copy))
    # with nnUNet_raw set, the synthetic dataset's own synthesis.json must not have changed either
    monkeypatch.setenv("nnUNet_raw", str(env.raw))
    refused(r"Dataset903_Tiny2DStandIn/synthesis.json: changed since the twins were preprocessed; rerun nnunet-synth "
            r"twins -d Dataset901_Tiny2D -s Dataset903_Tiny2DStandIn -c 2d",
            *rewrite(env.raw / "Dataset903_Tiny2DStandIn" / MANIFEST_FILE, lambda m: {**m, "cases": {
                k: {**c, "kept": False} if k == "case_000_syn000" else c for k, c in m["cases"].items()}}))
    refused("preprocessed with other plans",
            *rewrite(folder / TWIN_MANIFEST, lambda tm: {**tm, "plans_fingerprint": "sha256:other"}))
    case = sorted(tr)[1]
    refused(rf"twins.json: no twins for training case\(s\) {case}; rerun",
            *rewrite(folder / TWIN_MANIFEST, lambda tm: {**tm, "twins": {k: v for k, v in tm["twins"].items() if k != case}}))

    twin = folder / f"{case}_syn001.b2nd"
    original = twin.read_bytes()
    refused(rf"{case}_syn001.b2nd: shape \(1, 1, 32, 64\) differs from the real preprocessed case '{case}' \(1, 1, 64, 64\)",
            lambda: (twin.unlink(), blosc2.asarray(np.zeros((1, 1, 32, 64), np.float32), urlpath=str(twin))),
            lambda: twin.write_bytes(original))


def test_generator_trained_on_validation_cases_is_refused(env):
    folds = default_folds([f"case_{i:03d}" for i in range(10)])
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


def hand_made_batch(trainer, seed=0):
    """A training batch as DiffBoost's loader makes it: real, twin, mixing mask, nnU-Net's downsampled targets."""
    g = torch.Generator().manual_seed(seed)
    b, patch = trainer.batch_size, tuple(trainer.configuration_manager.patch_size)
    data = torch.randn((b, trainer.num_input_channels, *patch), generator=g)
    twin = data + 2.0 + torch.randn(data.shape, generator=g)
    seg = (torch.rand((b, 1, *patch), generator=g) > 0.6).to(torch.int16)
    ds = DownsampleSegForDSTransform(trainer._get_deep_supervision_scales())
    per_sample = [ds(segmentation=s)["segmentation"] for s in seg]
    target = [torch.stack(scale) for scale in zip(*per_sample)]
    mask = torch.stack([draw_mix_mask(patch, 0.5, trainer.mix_patch_edge, generator=g) for _ in range(b)])
    assert 0 < int(mask.sum()) < mask.numel()
    return {"data": data, "twin": twin, "target": target, "mix_mask": mask}


class InputMix(DiffBoostTrainer):
    mix_mode = "input"


def test_input_mix_feeds_the_network_where_mask_real_else_twin(env):
    trainer = make_trainer(InputMix, env)
    batch = hand_made_batch(trainer)
    seen = []
    trainer.network.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    trainer.train_step(batch)
    assert len(seen) == 1
    assert torch.equal(seen[0], torch.where(batch["mix_mask"], batch["data"], batch["twin"]))


def test_output_mix_loss_is_nnunets_loss_on_logits_mixed_by_hand(env):
    trainer = make_trainer(DiffBoostTrainer, env)
    batch = hand_made_batch(trainer, seed=1)
    b = trainer.batch_size
    with torch.no_grad():
        outputs = trainer.network(torch.cat((batch["data"], batch["twin"])))
        # the mask at every scale: nnU-Net's own target downsampling applied to it
        ds = DownsampleSegForDSTransform(trainer._get_deep_supervision_scales())
        masks = [torch.stack(scale).bool() for scale in zip(*[ds(segmentation=m.to(torch.int16))["segmentation"]
                                                               for m in batch["mix_mask"]])]
        mixed = [torch.where(m, o[:b], o[b:]) for o, m in zip(outputs, masks)]
        expected = trainer.loss.loss(mixed, batch["target"]).item()
    seen = []                                            # what the loss receives, logits at every scale
    trainer.loss.loss.register_forward_pre_hook(lambda module, args: seen.append([o.detach() for o in args[0]]))
    got = float(trainer.train_step(batch)["loss"])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert len(seen) == 1 and len(seen[0]) == len(mixed)
    for given, want, o, m in zip(seen[0], mixed, outputs, masks):
        torch.testing.assert_close(given, want, rtol=1e-4, atol=1e-5)
        twin_part = ~m.expand_as(given)
        assert twin_part.any()
        # the twin half mattered: where the mask says twin, the loss saw the twin's logits, not the real ones
        assert (given[twin_part] - o[:b][twin_part]).abs().max() > 1e-3


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
