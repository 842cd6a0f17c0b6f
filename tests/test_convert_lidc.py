"""LIDC-IDRI converter: DICOM series + reader XML, 50% consensus, patient grouping, problems."""
import json
import shutil

import numpy as np
import pytest

from nnunet_synth.convert import ConversionFailed
from nnunet_synth.convert.registry import load_converter
from nnunet_synth.convert.run import run_converter

import convert_fixtures as fixtures


def _read(path):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def test_lidc_consensus_geometry_and_grouping(tmp_path, nnunet_folders):
    src, expected = fixtures.lidc(tmp_path)
    folder = run_converter(load_converter("lidc-idri"), src, 540)
    assert fixtures.case_ids(folder) == ["lidc_0001", "lidc_0002", "lidc_0003"]  # the DX series is skipped
    image, hu = _read(folder / "imagesTr" / "lidc_0001_0000.nii.gz")
    _, seg = _read(folder / "labelsTr" / "lidc_0001.nii.gz")
    assert np.array_equal(seg.astype(bool), expected["seg_0001"])
    assert np.allclose(image.GetSpacing(), (0.7, 0.7, 2.5)) and np.allclose(image.GetOrigin(), (-10, -12, -100))
    assert hu.dtype == np.int16 and -900 < hu.mean() < -500  # rescaled to HU, slices sorted by position
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert "50%" in dataset_json["consensus_rule"] and dataset_json["file_ending"] == ".nii.gz"
    assert json.loads((folder / "patients.json").read_text())["lidc_0002"] == "LIDC-IDRI-0002"


def test_lidc_xml_from_separate_folder(tmp_path, nnunet_folders):
    src, expected = fixtures.lidc(tmp_path)
    xml_dir = tmp_path / "tcia-lidc-xml" / "185"
    xml_dir.mkdir(parents=True)
    for xml in src.rglob("*.xml"):
        shutil.move(str(xml), str(xml_dir / xml.name.replace(".xml", f"_{xml.parent.parent.parent.name}.xml")))
    with pytest.raises(ConversionFailed, match="3 problem"):
        run_converter(load_converter("lidc-idri"), src, 541)
    folder = run_converter(load_converter("lidc-idri"), src, 541, options={"xml_dir": xml_dir.parent})
    _, seg = _read(folder / "labelsTr" / "lidc_0001.nii.gz")
    assert np.array_equal(seg.astype(bool), expected["seg_0001"])


def test_lidc_problems(tmp_path, nnunet_folders):
    src, expected = fixtures.lidc(tmp_path, broken=True)
    with pytest.raises(ConversionFailed) as info:
        run_converter(load_converter("lidc-idri"), src, 542)
    assert [p.path.split("/")[-3] for p in info.value.problems] == expected["bad"]
    assert "has no reader XML" in info.value.problems[0].message
