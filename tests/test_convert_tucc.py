"""TUCC converter: HDF5 frames, patient-grouped folds, frame subsampling, problems."""
import json

import numpy as np
import pytest

from nnunet_synth.convert import ConversionFailed
from nnunet_synth.convert.registry import load_converter
from nnunet_synth.convert.run import run_converter
from nnunet_synth.convert.splits import check_grouped

import convert_fixtures as fixtures


def test_tucc_frames_grouped_by_patient(tmp_path, nnunet_folders):
    src, expected = fixtures.tucc(tmp_path)
    folder = run_converter(load_converter("tucc"), src, 520)
    ids = fixtures.case_ids(folder)
    assert len(ids) == expected["cases"] and "tucc_2-1_0002" in ids
    patients = json.loads((folder / "patients.json").read_text())
    assert patients["tucc_2-1_0000"] == patients["tucc_2_0000"] == "2"
    assert len(set(patients.values())) == expected["patients"]
    splits = json.loads((nnunet_folders.preprocessed / folder.name / "splits_final.json").read_text())
    check_grouped(splits, patients)
    seg = fixtures.read_png(folder / "labelsTr" / "tucc_1_0000.png")
    assert set(np.unique(seg)) == {0, 1}

    every_other = run_converter(load_converter("tucc"), src, 521, options={"frame_step": 2})
    assert len(fixtures.case_ids(every_other)) == 12  # frames 0 and 2 of six clips


def test_tucc_problems(tmp_path, nnunet_folders):
    src, expected = fixtures.tucc(tmp_path, broken=True)
    with pytest.raises(ConversionFailed) as info:
        run_converter(load_converter("tucc"), src, 520)
    assert [p.path.rsplit(":", 1)[-1] for p in info.value.problems] == expected["bad"]
    assert "anti-aliased" in info.value.problems[0].message
    folder = run_converter(load_converter("tucc"), src, 520, allow_skip=True)
    assert len(fixtures.case_ids(folder)) == expected["cases"]
