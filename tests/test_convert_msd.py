"""MSD: nnU-Net's own converter, wrapped in the staging, verification and problem report."""
import json

import pytest

from nnunet_synth.convert import ConversionFailed
from nnunet_synth.convert.registry import load_converter
from nnunet_synth.convert.run import run_converter

import convert_fixtures as fixtures


def test_msd_task_through_nnunet_converter(tmp_path, nnunet_folders, capsys):
    src, expected = fixtures.msd(tmp_path)
    folder = run_converter(load_converter("msd"), src, 530)
    assert folder.name == "Dataset530_Spleen"
    assert len(fixtures.case_ids(folder)) == expected["train"]
    assert len(fixtures.case_ids(folder, "imagesTs")) == expected["test"]
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "spleen": 1} and dataset_json["channel_names"] == {"0": "CT"}
    assert f"{expected['train']} training and {expected['test']} test case(s)" in capsys.readouterr().out
    assert [p.name for p in nnunet_folders.raw.iterdir()] == ["Dataset530_Spleen"]  # no scratch folders left


def test_msd_problems_are_listed_and_not_skippable(tmp_path, nnunet_folders):
    src, expected = fixtures.msd(tmp_path, broken=True)
    for allow_skip in (False, True):
        with pytest.raises(ConversionFailed) as info:
            run_converter(load_converter("msd"), src, 530, allow_skip=allow_skip)
        assert sorted({p.path.rsplit("/", 1)[-1] for p in info.value.problems}) == expected["bad"]
        assert any("unreadable NIfTI header" in p.message for p in info.value.problems)
    assert list(nnunet_folders.raw.iterdir()) == []
