"""DDTI converter: the three source layouts, problems, patient grouping, and the real crop folder."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from nnunet_synth.convert import ConversionFailed, ProblemLog
from nnunet_synth.convert.registry import load_converter
from nnunet_synth.convert.run import run_converter
from nnunet_synth.convert.splits import check_grouped

import convert_fixtures as fixtures

REAL = Path(os.environ.get("NNUNET_SYNTH_DDTI_CROP", "/work/shared/data/ddti_crop"))


def _check_grouped_output(folder: Path, preprocessed: Path, n_cases: int, n_patients: int):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(folder), 1)
    assert len(fixtures.case_ids(folder)) == n_cases
    patients = json.loads((folder / "patients.json").read_text())
    assert len(set(patients.values())) == n_patients
    splits = json.loads((folder / "splits_final.json").read_text())
    assert splits == json.loads((preprocessed / folder.name / "splits_final.json").read_text())
    check_grouped(splits, patients)
    assert sorted(c for f in splits for c in f["val"]) == fixtures.case_ids(folder)
    for label in (folder / "labelsTr").iterdir():
        assert set(np.unique(fixtures.read_png(label))) <= {0, 1}


def test_crop_layout_merges_identical_copies_and_keeps_patients_together(tmp_path, nnunet_folders):
    src, expected = fixtures.ddti_crops(tmp_path)
    folder = run_converter(load_converter("ddti"), src, 501)
    _check_grouped_output(folder, nnunet_folders.preprocessed, expected["cases"], expected["patients"])
    for case, union in expected["merged"]:
        assert np.array_equal(fixtures.read_png(folder / "labelsTr" / f"{case}.png"), union.astype(np.uint8))
    assert set(expected["separate"]) <= set(fixtures.case_ids(folder))
    assert fixtures.read_png(folder / "imagesTr" / "ddti_1_1_0000.png").ndim == 2
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "nodule": 1} and dataset_json["channel_names"] == {"0": "US"}
    assert "source_mask_mapping" in dataset_json


def test_crop_layout_problems_are_listed_and_skipped_on_request(tmp_path, nnunet_folders):
    src, expected = fixtures.ddti_crops(tmp_path, broken=True)
    with pytest.raises(ConversionFailed) as info:
        run_converter(load_converter("ddti"), src, 501)
    assert sorted(Path(p.path).name for p in info.value.problems) == sorted(expected["bad"])
    messages = " | ".join(p.message for p in info.value.problems)
    assert "unreadable image" in messages and "anti-aliased" in messages and "differs from image" in messages
    assert not any(nnunet_folders.raw.iterdir())
    folder = run_converter(load_converter("ddti"), src, 501, allow_skip=True)
    _check_grouped_output(folder, nnunet_folders.preprocessed, expected["cases"], expected["patients"])


def test_original_xml_layout(tmp_path, nnunet_folders):
    src, expected = fixtures.ddti_xml(tmp_path)
    folder = run_converter(load_converter("ddti"), src, 505)
    _check_grouped_output(folder, nnunet_folders.preprocessed, expected["cases"], expected["patients"])
    seg = fixtures.read_png(folder / "labelsTr" / f"{expected['two_polygons']}.png")
    assert seg[8, 8] == 1 and seg[16, 24] == 1 and seg[20, 5] == 0  # both polygons, background between


def test_original_xml_layout_problems(tmp_path, nnunet_folders):
    src, expected = fixtures.ddti_xml(tmp_path, broken=True)
    with pytest.raises(ConversionFailed) as info:
        run_converter(load_converter("ddti"), src, 505)
    assert sorted(Path(p.path).name for p in info.value.problems) == sorted(expected["bad"])


def test_processed_png_layout(tmp_path, nnunet_folders):
    src, expected = fixtures.ddti_processed(tmp_path)
    folder = run_converter(load_converter("ddti"), src, 506)
    _check_grouped_output(folder, nnunet_folders.preprocessed, expected["cases"], expected["patients"])


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real DDTI crops not present at {REAL}")
def test_real_ddti_crop_folder(tmp_path, nnunet_folders):
    """All 655 real files are enumerated; a patient-complete subset is converted end to end."""
    ddti = load_converter("ddti")
    problems = ProblemLog()
    layout, cases = ddti.find_cases(REAL, problems)
    assert layout.startswith("nodule crops") and not problems.problems
    assert sum(len(c.info["masks"]) for c in cases) == 655
    by_id = {c.case_id: c for c in cases}
    # Pixel-identical copies are merged: 294_1(1..3), 348_1(1..4), 359_1(1..2), 350_2, 374_1, 381_2
    # (15 files, 6 cases); 100_1(1)/(2) and 348_1(5) are crops of their own.
    assert len(by_id["ddti_294_1"].info["masks"]) == 3 and len(by_id["ddti_348_1_n1"].info["masks"]) == 4
    assert {"ddti_100_1_n1", "ddti_100_1_n2", "ddti_348_1_n5"} <= set(by_id)
    assert len(cases) == 655 - 15 + 6 and len({c.patient for c in cases}) == 380

    subset = tmp_path / "ddti_crop"
    patients = {"100", "101", "102", "106", "294", "350"}
    for sub in ("images", "masks"):
        (subset / sub).mkdir(parents=True)
        for f in (REAL / sub).iterdir():
            if f.name.split("_")[0] in patients:
                (subset / sub / f.name).symlink_to(f)
    n_subset = sum(c.patient in patients for c in cases)
    folder = run_converter(ddti, subset, 507)
    _check_grouped_output(folder, nnunet_folders.preprocessed, n_subset, len(patients))
    merged = fixtures.read_png(folder / "labelsTr" / "ddti_294_1.png")
    assert merged.shape == (300, 300) and 0 < merged.mean() < 1
