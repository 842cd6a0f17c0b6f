"""Bad input to `nnunet-synth expand`: one clear line naming the file, exit 2, nothing written or changed."""
import hashlib
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunet_synth.commands.main import main
from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import Manifest
from nnunet_synth.splits import default_folds
from nnunet_synth.training.synth_expand import check_training_fold
from nnunet_synth.testing import make_raw_dataset_2d, make_raw_dataset_3d, make_standin_synthetic_dataset


def tree_state(*roots):
    """Path -> content hash of every file below the roots (to prove nothing changed)."""
    state = {}
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for f in files:
                p = os.path.join(dirpath, f)
                state[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return state


def fake_plans(folders, dataset_folder):
    """The two files expand copies from the real preprocessed folder (a real plan is slow)."""
    pre = folders.preprocessed / dataset_folder.name
    pre.mkdir(parents=True, exist_ok=True)
    (pre / "nnUNetPlans.json").write_text(json.dumps({"dataset_name": dataset_folder.name, "configurations": {}}))
    (pre / "dataset_fingerprint.json").write_text("{}")


@pytest.fixture
def real_and_synth(nnunet_folders):
    real = make_raw_dataset_2d(nnunet_folders.raw, 901, n_cases=6, shape=(32, 32))
    fake_plans(nnunet_folders, real)
    case_ids = sorted(p.name[:-4] for p in (real / "labelsTr").iterdir())
    synth = make_standin_synthetic_dataset(real, nnunet_folders.raw, 902, trained_on=default_folds(case_ids)[0]["train"])
    return real, synth


def expect_error(folders, capsys, argv, *fragments):
    before = tree_state(folders.raw, folders.preprocessed)
    code = main(argv)
    # progress bars share stderr; the error is the one last line
    err = capsys.readouterr().err.strip().replace("\r", "\n").splitlines()[-1]
    assert code == 2
    assert err.startswith(f"nnunet-synth {argv[0]}: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    assert tree_state(folders.raw, folders.preprocessed) == before
    return err


EXPAND = ["expand", "-d", "901", "-s", "902", "-o", "903"]


EXPANDED = "Dataset903_Tiny2DExpanded"
REAL_IDS = [f"case_{i:03d}" for i in range(6)]
FOLDS = default_folds(REAL_IDS)


def read_expanded(folders):
    """(dataset.json, synthesis.json, expansion.json, splits_final.json) of the expanded dataset."""
    raw, pre = folders.raw / EXPANDED, folders.preprocessed / EXPANDED
    for name in ("dataset.json", "synthesis.json", "expansion.json"):
        assert (raw / name).read_bytes() == (pre / name).read_bytes(), name
    return tuple(json.loads((where / name).read_text()) for where, name in
                 ((raw, "dataset.json"), (raw, "synthesis.json"), (raw, "expansion.json"), (pre, "splits_final.json")))


def expected_splits(sources: dict[str, str], refused=(1, 2, 3, 4)) -> list[dict]:
    """The rule written out: real folds, plus each synthetic case where its source case is trained on,
    except in refused folds, which train on their real cases only (the split file itself is leak-free)."""
    return [{"train": sorted(f["train"]) + sorted(c for c, src in sources.items() if src in f["train"] and i not in refused),
             "val": sorted(f["val"])} for i, f in enumerate(FOLDS)]


def test_expand_succeeds_on_good_input(nnunet_folders, real_and_synth, capsys):
    real, synth = real_and_synth
    assert main(EXPAND) == 0
    out = capsys.readouterr().out
    dataset_json, manifest, expansion, splits = read_expanded(nnunet_folders)

    # the generator saw fold 0's training cases, which are the validation cases of folds 1-4
    gid = "Dataset902_Tiny2DStandIn:standin"
    assert expansion["leaky_folds"] == {gid: {str(f): sorted(FOLDS[f]["val"]) for f in range(1, 5)}}
    assert expansion["refused_folds"] == [1, 2, 3, 4] and expansion["allow_leakage"] is False
    assert "folds [1, 2, 3, 4] are refused" in out
    assert out.rstrip().endswith("nnUNetv2_train 903 CONFIG FOLD -tr nnUNetTrainerSynthExpand "
                                 "(FOLD: 0; folds 1, 2, 3, 4 refused, see above)"), out
    assert expansion["real_cases"] == REAL_IDS
    assert expansion["synthetic_cases"] == [f"{c}_syn000" for c in REAL_IDS]
    assert list(manifest["generators"]) == [gid] and sorted(manifest["cases"]) == expansion["synthetic_cases"]

    # every case resolves, the way nnU-Net resolves it, to the files of the dataset it comes from
    assert dataset_json["numTraining"] == 12
    resolved = get_filenames_of_train_images_and_targets(str(nnunet_folders.raw / EXPANDED), dataset_json)
    assert sorted(resolved) == sorted(REAL_IDS + expansion["synthetic_cases"])
    for case, files in resolved.items():
        home = synth if case in manifest["cases"] else real
        assert files == {"images": [str(home / "imagesTr" / f"{case}_0000.png")],
                         "label": str(home / "labelsTr" / f"{case}.png")}
        assert all(os.path.isfile(f) for f in files["images"] + [files["label"]])
    assert splits == expected_splits({c: c[:-7] for c in expansion["synthetic_cases"]})


def trainer_check(folders, train, val):
    """What nnUNetTrainerSynthExpand.do_split decides for a split, from the expanded preprocessed folder."""
    pre = folders.preprocessed / EXPANDED
    check_training_fold(0, EXPANDED, train, val, Manifest.load(pre), json.loads((pre / "expansion.json").read_text()))


def test_trainer_refuses_refused_and_hand_edited_leaky_folds(nnunet_folders, real_and_synth, capsys):
    assert main(EXPAND) == 0
    splits = json.loads((nnunet_folders.preprocessed / EXPANDED / "splits_final.json").read_text())
    trainer_check(nnunet_folders, splits[0]["train"], splits[0]["val"])
    with pytest.raises(SynthError, match=f"fold 0 of {EXPANDED} was refused: .*'Dataset902_Tiny2DStandIn:standin' "
                                         f"was trained on {FOLDS[1]['val'][0]}"):
        trainer_check(nnunet_folders, splits[1]["train"], splits[1]["val"])
    # splits_final.json edited by hand after expand: a case the generator saw moved into validation
    moved = FOLDS[1]["val"][0]
    edited_train = [c for c in splits[0]["train"] if c != moved and not c.startswith(moved)]
    with pytest.raises(SynthError, match=f"was refused: .* was trained on {moved}"):
        trainer_check(nnunet_folders, edited_train, splits[0]["val"] + [moved])
    # the placement rules, on cases the generator did not see
    twin_of_val = f"{FOLDS[0]['val'][0]}_syn000"
    with pytest.raises(SynthError, match=f"breaks the split rules: .*source case is validated in this fold: {twin_of_val}"):
        trainer_check(nnunet_folders, splits[0]["train"] + [twin_of_val], splits[0]["val"])
    with pytest.raises(SynthError, match=f"breaks the split rules: synthetic case\\(s\\) in validation: {twin_of_val}"):
        trainer_check(nnunet_folders, splits[0]["train"], splits[0]["val"] + [twin_of_val])

    assert main(EXPAND + ["--overwrite", "--allow-leakage"]) == 0
    expansion = json.loads((nnunet_folders.preprocessed / EXPANDED / "expansion.json").read_text())
    assert expansion["refused_folds"] == [] and expansion["leaky_folds"]   # still reported
    trainer_check(nnunet_folders, splits[1]["train"], splits[1]["val"])


def test_several_synthetic_datasets_from_generators_trained_on_different_folds(nnunet_folders, capsys):
    real = make_raw_dataset_2d(nnunet_folders.raw, 901, n_cases=6, shape=(32, 32))
    fake_plans(nnunet_folders, real)
    # A saw the validation cases of folds 2-4, B those of folds 1, 3 and 4: only fold 0 is clean for both
    seen_by_a = sorted(set(FOLDS[0]["train"]) & set(FOLDS[1]["train"]))
    seen_by_b = sorted(set(FOLDS[0]["train"]) & set(FOLDS[2]["train"]))
    a = make_standin_synthetic_dataset(real, nnunet_folders.raw, 902, trained_on=seen_by_a, cases=REAL_IDS[:3])
    b = make_standin_synthetic_dataset(real, nnunet_folders.raw, 904, k=2, trained_on=seen_by_b, cases=REAL_IDS[3:])
    assert main(EXPAND + ["-s", "904"]) == 0
    out = capsys.readouterr().out
    dataset_json, manifest, expansion, splits = read_expanded(nnunet_folders)
    ga, gb = f"{a.name}:standin", f"{b.name}:standin"
    assert expansion["leaky_folds"] == {ga: {str(f): sorted(FOLDS[f]["val"]) for f in (2, 3, 4)},
                                        gb: {str(f): sorted(FOLDS[f]["val"]) for f in (1, 3, 4)}}
    assert expansion["refused_folds"] == [1, 2, 3, 4] and "folds [1, 2, 3, 4] are refused" in out
    assert expansion["synthetic_datasets"] == [a.name, b.name]
    assert {c: v["generator"] for c, v in manifest["cases"].items()} == \
        {**{f"{c}_syn000": ga for c in REAL_IDS[:3]}, **{f"{c}_syn{k:03d}": gb for c in REAL_IDS[3:] for k in (0, 1)}}
    assert splits == expected_splits({c: v["source_case"] for c, v in manifest["cases"].items()})
    for case in manifest["cases"]:
        home = a if manifest["cases"][case]["generator"] == ga else b
        assert (nnunet_folders.raw / EXPANDED / dataset_json["dataset"][case]["label"]).resolve() == \
            home / "labelsTr" / f"{case}.png"
    trainer_check(nnunet_folders, splits[0]["train"], splits[0]["val"])
    for fold, leaking in ((1, gb), (2, ga), (3, f"{ga}.*{gb}")):
        with pytest.raises(SynthError, match=f"was refused: .*{leaking}") as e:
            trainer_check(nnunet_folders, splits[fold]["train"], splits[fold]["val"])
        assert str(e.value).count("generator '") == (2 if fold == 3 else 1), str(e.value)

    # generators fitted on two different folds leave no fold clean
    c = make_standin_synthetic_dataset(real, nnunet_folders.raw, 905, trained_on=FOLDS[1]["train"], cases=REAL_IDS[3:])
    make_standin_synthetic_dataset(real, nnunet_folders.raw, 906, trained_on=FOLDS[0]["train"], cases=REAL_IDS[:3])
    argv = ["expand", "-d", "901", "-s", "906", "-s", "905", "-o", "907"]
    expect_error(nnunet_folders, capsys, argv, "every fold (5)", "--allow-leakage")
    assert main(argv + ["--allow-leakage"]) == 0
    expansion = json.loads((nnunet_folders.raw / "Dataset907_Tiny2DExpanded" / "expansion.json").read_text())
    assert expansion["refused_folds"] == []
    assert expansion["leaky_folds"][f"{c.name}:standin"] == {str(f): sorted(FOLDS[f]["val"]) for f in (0, 2, 3, 4)}


def test_include_filtered(nnunet_folders, real_and_synth, capsys):
    _, synth = real_and_synth
    manifest = Manifest.load(synth)
    rejected = ["case_001_syn000", "case_004_syn000"]
    for case in rejected:
        manifest.cases[case].kept = False
    manifest.save(synth)

    assert main(EXPAND) == 0
    dataset_json, merged, expansion, splits = read_expanded(nnunet_folders)
    kept = sorted(set(manifest.cases) - set(rejected))
    assert expansion["synthetic_cases"] == kept == sorted(merged["cases"]) and expansion["include_filtered"] is False
    assert sorted(dataset_json["dataset"]) == sorted(REAL_IDS + kept) and dataset_json["numTraining"] == 10
    assert splits == expected_splits({c: c[:-7] for c in kept})

    assert main(EXPAND + ["--overwrite", "--include-filtered"]) == 0
    dataset_json, merged, expansion, splits = read_expanded(nnunet_folders)
    assert expansion["synthetic_cases"] == sorted(manifest.cases) and expansion["include_filtered"] is True
    assert {c: merged["cases"][c]["kept"] for c in rejected} == {c: False for c in rejected}
    assert sorted(dataset_json["dataset"]) == sorted(REAL_IDS + list(manifest.cases))
    assert splits == expected_splits({c: c[:-7] for c in manifest.cases})

    for case in manifest.cases.values():
        case.kept = False
    manifest.save(synth)
    capsys.readouterr()
    expect_error(nnunet_folders, capsys, EXPAND + ["--overwrite"], "no synthetic case to add", "filtered out")


def test_missing_dataset_json(nnunet_folders, real_and_synth, capsys):
    real, _ = real_and_synth
    (real / "dataset.json").unlink()
    expect_error(nnunet_folders, capsys, EXPAND, str(real / "dataset.json"), "missing")


def test_malformed_dataset_json(nnunet_folders, real_and_synth, capsys):
    real, _ = real_and_synth
    (real / "dataset.json").write_text('{"labels": {"background": 0,')
    expect_error(nnunet_folders, capsys, EXPAND, str(real / "dataset.json"), "not valid JSON")


def test_dataset_json_missing_key(nnunet_folders, real_and_synth, capsys):
    real, _ = real_and_synth
    dj = json.loads((real / "dataset.json").read_text())
    del dj["file_ending"]
    (real / "dataset.json").write_text(json.dumps(dj))
    expect_error(nnunet_folders, capsys, EXPAND, str(real / "dataset.json"), "file_ending")


def test_image_without_label(nnunet_folders, real_and_synth, capsys):
    real, _ = real_and_synth
    (real / "labelsTr" / "case_002.png").unlink()
    expect_error(nnunet_folders, capsys, EXPAND, "case_002_0000.png", "image without label")


def test_label_without_image(nnunet_folders, real_and_synth, capsys):
    real, _ = real_and_synth
    (real / "imagesTr" / "case_003_0000.png").unlink()
    expect_error(nnunet_folders, capsys, EXPAND, str(real / "labelsTr" / "case_003.png"), "label without image")


def test_shape_mismatch(nnunet_folders, real_and_synth, capsys):
    real, _ = real_and_synth
    from skimage import io

    io.imsave(real / "labelsTr" / "case_001.png", np.zeros((30, 32), np.uint8), check_contrast=False)
    expect_error(nnunet_folders, capsys, EXPAND, "case_001.png", "shape")


def test_spacing_mismatch(nnunet_folders, capsys):
    real = make_raw_dataset_3d(nnunet_folders.raw, 901, n_cases=4, shape=(6, 12, 12))
    fake_plans(nnunet_folders, real)
    label = real / "labelsTr" / "case_001.nii.gz"
    img = sitk.ReadImage(str(label))
    img.SetSpacing((0.8, 0.8, 3.0))
    sitk.WriteImage(img, str(label))
    make_standin_synthetic_dataset(real, nnunet_folders.raw, 902, cases=["case_000"])
    expect_error(nnunet_folders, capsys, EXPAND, str(label), "spacing")


def test_undeclared_label_value(nnunet_folders, real_and_synth, capsys):
    real, _ = real_and_synth
    from skimage import io

    io.imsave(real / "labelsTr" / "case_004.png", np.full((32, 32), 3, np.uint8), check_contrast=False)
    expect_error(nnunet_folders, capsys, EXPAND, "case_004.png", "[3]", "are not among the values allowed by")


def test_synthetic_without_manifest(nnunet_folders, real_and_synth, capsys):
    _, synth = real_and_synth
    (synth / "synthesis.json").unlink()
    expect_error(nnunet_folders, capsys, EXPAND, str(synth / "synthesis.json"), "missing")


def test_manifest_names_unknown_source(nnunet_folders, real_and_synth, capsys):
    _, synth = real_and_synth
    manifest = Manifest.load(synth)
    case = manifest.cases.pop("case_000_syn000")
    case.source_case = "case_999"
    manifest.cases["case_999_syn000"] = case
    manifest.save(synth)
    expect_error(nnunet_folders, capsys, EXPAND, str(synth / "synthesis.json"), "case_999", "not cases of")


def test_duplicate_case_ids(nnunet_folders, real_and_synth, capsys):
    real, _ = real_and_synth
    make_standin_synthetic_dataset(real, nnunet_folders.raw, 904, base_seed=1)
    expect_error(nnunet_folders, capsys, EXPAND + ["-s", "904"], "case_000_syn000", "unique")


def test_output_id_exists(nnunet_folders, real_and_synth, capsys):
    assert main(EXPAND) == 0
    capsys.readouterr()
    err = expect_error(nnunet_folders, capsys, EXPAND, "Dataset903_Tiny2DExpanded", "already exists")
    assert "--overwrite" in err
    assert main(EXPAND + ["--overwrite"]) == 0


def test_truncated_image(nnunet_folders, real_and_synth, capsys):
    real, _ = real_and_synth
    path = real / "imagesTr" / "case_005_0000.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    expect_error(nnunet_folders, capsys, EXPAND, str(path), "cannot be read")


def test_real_dataset_not_planned(nnunet_folders, real_and_synth, capsys):
    real, _ = real_and_synth
    (nnunet_folders.preprocessed / real.name / "nnUNetPlans.json").unlink()
    expect_error(nnunet_folders, capsys, EXPAND, "nnUNetPlans.json", "nnUNetv2_plan_and_preprocess -d 901")


def test_every_fold_leaky_is_refused(nnunet_folders, capsys):
    real = make_raw_dataset_2d(nnunet_folders.raw, 901, n_cases=6, shape=(32, 32))
    fake_plans(nnunet_folders, real)
    all_cases = sorted(p.name[:-4] for p in (real / "labelsTr").iterdir())
    make_standin_synthetic_dataset(real, nnunet_folders.raw, 902, trained_on=all_cases)
    expect_error(nnunet_folders, capsys, EXPAND, "every fold", "--allow-leakage")
    assert main(EXPAND + ["--allow-leakage"]) == 0


def test_synthetic_only_mode(nnunet_folders, real_and_synth, capsys):
    assert main(EXPAND + ["--synthetic-only"]) == 0
    pre = nnunet_folders.preprocessed / "Dataset903_Tiny2DExpanded"
    splits = json.loads((pre / "splits_final.json").read_text())
    expansion = json.loads((pre / "expansion.json").read_text())
    assert expansion["synthetic_only"] is True
    assert expansion["refused_folds"] == [1, 2, 3, 4]
    for i, fold in enumerate(splits):
        # a refused fold trains on its real cases only, in this mode too
        assert fold["train"] and all(("_syn" in c) == (i == 0) for c in fold["train"])
        assert fold["val"] and not any("_syn" in c for c in fold["val"])
