"""2D converters without patient ids: BUSI, TN3K, ISIC 2017/2018, PH2."""
import json

import numpy as np
import pytest

from nnunet_synth.convert import ConversionFailed
from nnunet_synth.convert.registry import load_converter
from nnunet_synth.convert.run import run_converter

import convert_fixtures as fixtures


def _labels(folder, sub="labelsTr"):
    return {p.name.split(".")[0]: fixtures.read_png(p) for p in (folder / sub).iterdir()}


def _problem_files(info):
    return sorted(p.path.rsplit("/", 1)[-1] for p in info.value.problems)


def test_busi_merges_masks_keeps_normal_cases_and_optional_classes(tmp_path, nnunet_folders):
    src, expected = fixtures.busi(tmp_path)
    folder = run_converter(load_converter("busi"), src, 510)
    labels = _labels(folder)
    assert len(labels) == expected["cases"] == len(fixtures.case_ids(folder))
    case, second = expected["second_mask"]
    assert labels[case][second].all()  # the _mask_1 lesion is in the merged label
    assert labels[expected["empty"]].max() == 0
    assert all(set(np.unique(v)) <= {0, 1} for v in labels.values())
    assert fixtures.read_png(folder / "imagesTr" / f"{case}_0000.png").ndim == 2  # RGB-stored gray -> 1 channel

    classes = run_converter(load_converter("busi"), src, 511, options={"classes": True})
    labels = _labels(classes)
    assert labels["busi_malignant_001"].max() == 2 and labels["busi_benign_001"].max() == 1
    assert json.loads((classes / "dataset.json").read_text())["labels"] == {"background": 0, "benign": 1, "malignant": 2}


def test_busi_problems(tmp_path, nnunet_folders):
    src, expected = fixtures.busi(tmp_path, broken=True)
    with pytest.raises(ConversionFailed) as info:
        run_converter(load_converter("busi"), src, 510)
    assert _problem_files(info) == sorted(expected["bad"])
    folder = run_converter(load_converter("busi"), src, 510, allow_skip=True)
    assert len(fixtures.case_ids(folder)) == expected["cases"]


def test_tn3k_keeps_test_set_and_official_folds(tmp_path, nnunet_folders):
    src, expected = fixtures.tn3k(tmp_path)
    folder = run_converter(load_converter("tn3k"), src, 512)
    assert len(fixtures.case_ids(folder)) == expected["train"]
    assert len(fixtures.case_ids(folder, "imagesTs")) == len(list((folder / "labelsTs").iterdir())) == expected["test"]
    splits = json.loads((nnunet_folders.preprocessed / folder.name / "splits_final.json").read_text())
    assert len(splits) == 1 and splits[0]["val"] == expected["fold0_val"]
    for sub in ("labelsTr", "labelsTs"):
        for seg in _labels(folder, sub).values():
            assert set(np.unique(seg)) == {0, 1}  # JPEG masks thresholded, not anti-alias errors
    assert not list(folder.rglob("*.jpg"))


def test_tn3k_problems(tmp_path, nnunet_folders):
    src, expected = fixtures.tn3k(tmp_path, broken=True)
    with pytest.raises(ConversionFailed) as info:
        run_converter(load_converter("tn3k"), src, 512)
    assert _problem_files(info) == sorted(expected["bad"])

    src, _ = fixtures.tn3k(tmp_path / "bad_folds")
    (src / "tn3k-trainval-fold1.json").write_text('{"train": [0, 1], "val": [2')
    (src / "tn3k-trainval-fold2.json").write_text('{"train": [0, 1]}')
    with pytest.raises(ConversionFailed) as info:
        run_converter(load_converter("tn3k"), src, 512)
    problems = {p.path.rsplit("/", 1)[-1]: p.message for p in info.value.problems}
    assert set(problems) == {"tn3k-trainval-fold1.json", "tn3k-trainval-fold2.json"}
    assert problems["tn3k-trainval-fold1.json"].startswith("not valid JSON")
    assert "'train' and 'val'" in problems["tn3k-trainval-fold2.json"]


@pytest.mark.parametrize("year", [2017, 2018])
def test_isic_rgb_channels_and_test_split(tmp_path, nnunet_folders, year):
    src, expected = fixtures.isic(tmp_path, year=year)
    folder = run_converter(load_converter(f"isic{year}"), src, 513)
    ids = fixtures.case_ids(folder)
    assert len(ids) == expected["train"] and all(i.startswith("ISIC_") for i in ids)
    channels = sorted(p.name for p in (folder / "imagesTr").glob(f"{ids[0]}_*"))
    assert channels == [f"{ids[0]}_000{c}.png" for c in range(3)]
    assert fixtures.read_png(folder / "imagesTr" / channels[0]).ndim == 2
    assert len(fixtures.case_ids(folder, "imagesTs")) == expected["test"]
    n_test_labels = len(list((folder / "labelsTs").iterdir())) if (folder / "labelsTs").exists() else 0
    assert n_test_labels == expected["test_labels"]
    assert json.loads((folder / "dataset.json").read_text())["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert not list(folder.rglob("*superpixels*"))


def test_isic_problems(tmp_path, nnunet_folders):
    src, expected = fixtures.isic(tmp_path, year=2017, broken=True)
    with pytest.raises(ConversionFailed) as info:
        run_converter(load_converter("isic2017"), src, 513)
    assert _problem_files(info) == sorted(expected["bad"])


def test_ph2(tmp_path, nnunet_folders):
    src, expected = fixtures.ph2(tmp_path)
    folder = run_converter(load_converter("ph2"), src, 514)
    assert len(fixtures.case_ids(folder)) == expected["cases"]
    assert all(set(np.unique(v)) == {0, 1} for v in _labels(folder).values())
    src, expected = fixtures.ph2(tmp_path / "broken", broken=True)
    with pytest.raises(ConversionFailed) as info:
        run_converter(load_converter("ph2"), src, 515)
    assert _problem_files(info) == expected["bad"]
