"""Shared converter machinery: mask binarisation, grouped folds, staging, the command line."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_synth.commands import main as cli
from nnunet_synth.convert import CaseProblem, ConversionFailed
from nnunet_synth.convert.images import binarize, read_gray
from nnunet_synth.convert.registry import CONVERTERS, load_converter
from nnunet_synth.convert.run import run_converter
from nnunet_synth.convert.splits import check_grouped, grouped_kfold
from nnunet_synth.errors import SynthError

import convert_fixtures as fixtures

REPO = Path(__file__).resolve().parents[1]


def test_binarize_accepts_one_foreground_value_and_rejects_anti_aliasing(tmp_path):
    for fg in (1, 255, 38):
        values = np.array([[0, fg], [fg, 0]], np.uint8)
        assert binarize(values, "m.png").tolist() == [[0, 1], [1, 0]]
    assert binarize(np.zeros((2, 2), np.uint8), "m.png").sum() == 0
    with pytest.raises(CaseProblem, match="anti-aliased.*3 distinct values"):
        binarize(np.array([[0, 128, 255]], np.uint8), "m.png")


def test_binarize_thresholds_jpeg_masks_but_rejects_images():
    jpeg_noise = np.zeros((10, 10), np.uint8)
    jpeg_noise[:, 5:] = 252
    jpeg_noise[0, :6] = [0, 3, 5, 90, 140, 250]  # ringing along the edge
    expected = (np.arange(10) >= 5)[None].repeat(10, 0)
    expected[0, 4] = True  # 140 > 127
    assert np.array_equal(binarize(jpeg_noise, "m.jpg"), expected)
    with pytest.raises(CaseProblem, match="not a binary mask"):
        binarize(np.random.default_rng(0).integers(0, 256, (20, 20)).astype(np.uint8), "m.jpg")


def test_read_gray_keeps_equal_channels_and_warns_on_colour(tmp_path):
    from PIL import Image

    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "a.png")
    assert np.array_equal(read_gray(tmp_path / "a.png"), gray)
    colour = np.stack([gray, gray // 2, gray], -1)
    Image.fromarray(colour).save(tmp_path / "b.png")
    warnings = []
    assert read_gray(tmp_path / "b.png", warnings).shape == (3, 4)
    assert warnings and "luma" in warnings[0]
    rng = np.random.default_rng(0)
    noisy_gray = rng.integers(0, 256, (16, 16)).astype(np.uint8)
    Image.fromarray(np.stack([noisy_gray] * 3, -1)).save(tmp_path / "d.jpg", quality=75)
    warnings = []
    assert read_gray(tmp_path / "d.jpg", warnings).shape == (16, 16) and warnings == []  # chroma noise only
    Image.fromarray(np.stack([noisy_gray, noisy_gray // 3, noisy_gray], -1)).save(tmp_path / "e.jpg")
    read_gray(tmp_path / "e.jpg", warnings)
    assert len(warnings) == 1
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(CaseProblem, match="unreadable image"):
        read_gray(tmp_path / "c.png")


def test_grouped_kfold_keeps_groups_together_and_balances():
    rng = np.random.default_rng(1)
    groups = [f"p{g}" for g in rng.integers(0, 40, 200)]
    cases = [f"c{i:03d}" for i in range(200)]
    folds = grouped_kfold(cases, groups, n_folds=5, seed=3)
    check_grouped(folds, dict(zip(cases, groups)))
    assert sorted(c for f in folds for c in f["val"]) == sorted(cases)
    sizes = [len(f["val"]) for f in folds]
    assert max(sizes) - min(sizes) <= max(groups.count(g) for g in set(groups))
    assert folds == grouped_kfold(cases, groups, n_folds=5, seed=3)
    assert folds != grouped_kfold(cases, groups, n_folds=5, seed=4)
    with pytest.raises(ValueError, match="both sides"):
        check_grouped([{"train": ["c000"], "val": ["c001"]}], {"c000": "p", "c001": "p"})
    with pytest.raises(SynthError, match="at least 2 patients"):
        grouped_kfold(["a", "b"], ["p", "p"])
    assert len(grouped_kfold(["a", "b", "c"], ["p", "q", "r"])) == 3


def test_grouped_kfold_fills_the_lightest_fold_largest_patient_first():
    """Patients of 6, 5, 4, 3, 2 and 1 images in 3 folds: 6+1, 5+2, 4+3 whatever the seed (no ties to break)."""
    sizes = {"A": 6, "B": 5, "C": 4, "D": 3, "E": 2, "F": 1}
    groups = [g for g, n in sizes.items() for _ in range(n)]
    cases = [f"{g}{i}" for g, n in sizes.items() for i in range(n)]
    for seed in (0, 1, 12345):
        folds = grouped_kfold(cases, groups, n_folds=3, seed=seed)
        assert [sorted({c[0] for c in f["val"]}) for f in folds] == [["A", "F"], ["B", "E"], ["C", "D"]]
        assert all(sorted(f["train"] + f["val"]) == sorted(cases) for f in folds)


def test_every_registered_converter_imports_and_documents_its_layout():
    for name in CONVERTERS:
        module = load_converter(name)
        assert "layout" in module.__doc__.lower() or "SOURCE_DIR" in module.__doc__, name
        assert callable(module.convert)
    with pytest.raises(SynthError, match="unknown dataset 'nope'"):
        load_converter("nope")


def test_failed_conversion_leaves_nothing_and_names_the_files(tmp_path, nnunet_folders, capsys):
    src, expected = fixtures.busi(tmp_path, broken=True)
    with pytest.raises(ConversionFailed) as info:
        run_converter(load_converter("busi"), src, 502, raw_root=nnunet_folders.raw)
    assert len(info.value.problems) == len(expected["bad"])
    assert "\n" not in str(info.value) and "--allow-skip" in str(info.value)
    report = capsys.readouterr().err
    for name in expected["bad"]:
        assert name in report
    assert list(nnunet_folders.raw.iterdir()) == []
    assert not (nnunet_folders.preprocessed / "Dataset502_BUSI").exists()


def test_nothing_convertible_is_an_error(tmp_path, nnunet_folders):
    src, _ = fixtures.ph2(tmp_path)
    for lesion in src.rglob("*_lesion.bmp"):
        lesion.unlink()
    with pytest.raises(SynthError, match="no training case could be converted"):
        run_converter(load_converter("ph2"), src, 503, raw_root=nnunet_folders.raw, allow_skip=True)
    assert list(nnunet_folders.raw.iterdir()) == []


def test_existing_dataset_id_is_refused(tmp_path, nnunet_folders):
    (nnunet_folders.raw / "Dataset502_Other").mkdir()
    src, _ = fixtures.busi(tmp_path)
    with pytest.raises(SynthError, match="id 502 is taken by Dataset502_Other"):
        run_converter(load_converter("busi"), src, 502, raw_root=nnunet_folders.raw)
    with pytest.raises(SynthError, match="source folder not found"):
        run_converter(load_converter("busi"), tmp_path / "missing", 503, raw_root=nnunet_folders.raw)


def test_cli_exit_codes_and_allow_skip(tmp_path, nnunet_folders, capsys):
    src, expected = fixtures.ddti_crops(tmp_path, broken=True)
    assert cli.main(["convert", "ddti", str(src), "-d", "501", "-o", str(nnunet_folders.raw)]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s) in the source data" in err and "nnunet-synth convert: error:" in err
    assert not any(nnunet_folders.raw.iterdir())
    assert cli.main(["convert", "ddti", str(src), "-d", "501", "-o", str(nnunet_folders.raw), "--allow-skip"]) == 0
    out, err = capsys.readouterr()
    assert "skipped 3 case(s)" in out
    # The three broken sources (8_1, 9_1, 10_1) are left out; 2_1(1)/(2) are one image, 3_1 two crops.
    assert fixtures.case_ids(nnunet_folders.raw / "Dataset501_DDTI") == [
        "ddti_1_1", "ddti_2_1", "ddti_3_1_n1", "ddti_3_1_n2", "ddti_4_1", "ddti_4_2", "ddti_5_1", "ddti_6_1",
        "ddti_7_1"]
    assert len(fixtures.case_ids(nnunet_folders.raw / "Dataset501_DDTI")) == expected["cases"]


def test_script_entry_point_with_worker_processes(tmp_path, nnunet_folders):
    """The nnU-Net style script runs on its own, with spawned workers (-np 2).

    --no-verify: nnU-Net's verification would start its own pool of spawned
    processes that import torch, a minute on a loaded 2-core machine; the other
    tests run the same checks in threads.
    """
    src, expected = fixtures.ph2(tmp_path)
    proc = subprocess.run([sys.executable, str(REPO / "dataset_conversion" / "ph2.py"), str(src), "-d", "504",
                           "-np", "2", "--no-verify"], env=nnunet_folders.env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = nnunet_folders.raw / "Dataset504_PH2"
    assert len(fixtures.case_ids(folder)) == expected["cases"]
    assert json.loads((folder / "dataset.json").read_text())["channel_names"] == {"0": "R", "1": "G", "2": "B"}


def test_tdid_is_the_ddti_converter():
    assert load_converter("tdid") is load_converter("ddti")


def _modules_after(argv: list[str]) -> tuple[str, set[str]]:
    """(--help output, converter script modules imported) of ``nnunet-synth ARGV`` in a fresh interpreter."""
    code = ("import sys\nfrom nnunet_synth.commands.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('MODULES', *sorted(m for m in sys.modules if m.startswith('nnunet_synth_dataset_conversion.')))")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out, _, modules = proc.stdout.rpartition("MODULES")
    return out, set(modules.split())


def test_converter_scripts_are_imported_only_when_parsed():
    out, modules = _modules_after(["convert", "--help"])
    assert modules == set()
    assert all(name in out for name in CONVERTERS)
    out, modules = _modules_after(["convert", "ddti", "--help"])
    assert modules == {"nnunet_synth_dataset_conversion.ddti"}
    assert "nodule-crop layout" in out and "SOURCE_DIR" in out  # the script's docstring and the common options
    out, modules = _modules_after(["convert", "busi", "--help"])
    assert modules == {"nnunet_synth_dataset_conversion.busi"} and "--classes" in out


def test_converter_options_reach_convert_as_keywords(tmp_path, nnunet_folders, monkeypatch):
    seen = []

    def convert(source, ds, **options):
        seen.append(options)
        raise SynthError("stopped once the options arrived")

    monkeypatch.setattr(load_converter("busi"), "convert", convert)
    src, _ = fixtures.busi(tmp_path)
    command = ["busi", str(src), "-d", "502", "-o", str(nnunet_folders.raw)]
    assert cli.main(["convert", *command]) == 2
    assert cli.main(["convert", *command, "--classes"]) == 2
    assert seen == [{"classes": False}, {"classes": True}]  # its own options only, as plain values
    with pytest.raises(SystemExit) as info:  # another converter's option is a usage error
        cli.main(["convert", "ph2", *command[1:], "--classes"])
    assert info.value.code == 2
