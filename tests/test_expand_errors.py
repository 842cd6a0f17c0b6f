"""Bad input to `nnunet-synth expand`: one clear line naming the file, exit 2, nothing written or changed."""
import hashlib
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_synth.commands.main import main
from nnunet_synth.manifest import Manifest
from nnunet_synth.splits import default_folds
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


def test_expand_succeeds_on_good_input(nnunet_folders, real_and_synth, capsys):
    assert main(EXPAND) == 0
    assert (nnunet_folders.raw / "Dataset903_Tiny2DExpanded" / "dataset.json").is_file()
    assert (nnunet_folders.preprocessed / "Dataset903_Tiny2DExpanded" / "splits_final.json").is_file()


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
    expect_error(nnunet_folders, capsys, EXPAND, "case_004.png", "[3]", "not declared")


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
    for fold in splits:
        assert fold["train"] and all("_syn" in c for c in fold["train"])
        assert fold["val"] and not any("_syn" in c for c in fold["val"])
