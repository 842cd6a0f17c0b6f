"""`evaluate`: folder evaluation against nnU-Net's own numbers, edge cases and bad inputs."""
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_synth.commands import main as cli
from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.evaluate import evaluate_folders

SPACING_ZYX = (3.0, 0.8, 0.6)


def write_nifti(path, array, spacing_zyx=SPACING_ZYX, origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def make_folders(tmp_path, labels={"background": 0, "lesion": 1}):
    ref, pred = tmp_path / "ds" / "labelsTr", tmp_path / "pred"
    ref.mkdir(parents=True)
    pred.mkdir()
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 0, "file_ending": ".nii.gz"}))
    return ref, pred


def cube(lo, hi, shape=(10, 24, 24)):
    seg = np.zeros(shape, np.uint8)
    seg[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = 1
    return seg


@pytest.fixture
def three_cases(tmp_path):
    ref, pred = make_folders(tmp_path)
    write_nifti(ref / "a.nii.gz", cube((2, 4, 4), (6, 12, 12)))
    write_nifti(pred / "a.nii.gz", cube((3, 5, 4), (6, 12, 14)))
    write_nifti(ref / "b.nii.gz", cube((1, 2, 2), (5, 9, 9)))
    write_nifti(pred / "b.nii.gz", np.zeros((10, 24, 24), np.uint8))  # missed lesion
    write_nifti(ref / "c.nii.gz", np.zeros((10, 24, 24), np.uint8))  # nothing to find, nothing found
    write_nifti(pred / "c.nii.gz", np.zeros((10, 24, 24), np.uint8))
    return ref, pred


def test_summary_extends_nnunet_and_counts_valid_cases(three_cases, tmp_path):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    ref, pred = three_cases
    out = tmp_path / "summary.json"
    summary = evaluate_folders(ref, pred, out, progress=False)
    nnunet = [compute_metrics(str(ref / f"{c}.nii.gz"), str(pred / f"{c}.nii.gz"), SimpleITKIO(), [1]) for c in "abc"]
    for ours, theirs in zip(summary["metric_per_case"], nnunet):
        for key in ("Dice", "IoU", "TP", "FP", "FN", "TN", "n_pred", "n_ref"):
            a, b = ours["metrics"][1][key], theirs["metrics"][1][key]
            assert (math.isnan(a) and math.isnan(b)) or a == b, key
    assert summary["mean"][1]["Dice"] == pytest.approx(np.nanmean([c["metrics"][1]["Dice"] for c in nnunet]))
    assert summary["n_cases"] == 3 and summary["n_valid"][1]["Dice"] == 2 and summary["n_valid"][1]["HD95"] == 2
    assert summary["empty_counts"][1] == {"empty_pred": 2, "empty_ref": 1, "both_empty": 1}
    diagonal = math.sqrt((10 * 3.0) ** 2 + (24 * 0.8) ** 2 + (24 * 0.6) ** 2)
    case_b = summary["metric_per_case"][1]["metrics"][1]
    assert case_b["HD95"] == pytest.approx(diagonal) and case_b["empty_pred"]
    written = json.loads(out.read_text())
    assert set(written) >= {"metric_per_case", "mean", "foreground_mean", "n_valid"}
    assert written["mean"]["1"]["HD95"] == pytest.approx(summary["mean"][1]["HD95"])
    assert written["foreground_mean"]["Dice"] == pytest.approx(summary["mean"][1]["Dice"])
    from nnunetv2.evaluation.evaluate_predictions import load_summary_json

    assert load_summary_json(str(out))["mean"][1]["HD95"] == pytest.approx(summary["mean"][1]["HD95"])


def test_parallel_equals_serial(three_cases):
    ref, pred = three_cases
    serial = evaluate_folders(ref, pred, progress=False)
    parallel = evaluate_folders(ref, pred, num_processes=2, progress=False)
    assert json.dumps(serial["mean"][1], sort_keys=True) == json.dumps(parallel["mean"][1], sort_keys=True)


def test_cli_writes_summary_next_to_predictions(three_cases, capsys):
    ref, pred = three_cases
    assert cli.main(["evaluate", str(ref), str(pred)]) == 0
    assert "HD95" in json.loads((pred / "summary.json").read_text())["mean"]["1"]
    assert "3 case(s) scored" in capsys.readouterr().out


@pytest.mark.parametrize("problem,message", [
    ("missing", "case 'a': missing prediction"),
    ("shape", "case 'a': prediction .* has shape"),
    ("spacing", "case 'a': prediction .* has spacing"),
    ("origin", "case 'a': prediction .* has origin"),
    ("float", "case 'a': .* label values must be integers"),
    ("unknown_label", r"case 'a': .* label value\(s\) \[3\] are not among the values allowed by dataset.json"),
])
def test_bad_inputs_name_the_case(tmp_path, problem, message, capsys):
    ref, pred = make_folders(tmp_path)
    seg = cube((2, 4, 4), (6, 12, 12))
    write_nifti(ref / "a.nii.gz", seg)
    if problem == "shape":
        write_nifti(pred / "a.nii.gz", seg[:, :20])
    elif problem == "spacing":
        write_nifti(pred / "a.nii.gz", seg, spacing_zyx=(2.0, 0.8, 0.6))
    elif problem == "origin":
        write_nifti(pred / "a.nii.gz", seg, origin=(5.0, 0.0, 0.0))
    elif problem == "float":
        write_nifti(pred / "a.nii.gz", seg.astype(np.float32) * 0.5)
    elif problem == "unknown_label":
        write_nifti(pred / "a.nii.gz", seg * 3)
    with pytest.raises(SynthError, match=message):
        evaluate_folders(ref, pred, progress=False)
    assert cli.main(["evaluate", str(ref), str(pred), "-o", str(tmp_path / "out.json")]) == 2
    assert "case 'a'" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_missing_dataset_json_says_what_to_pass(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    with pytest.raises(SynthError, match="-djfile"):
        evaluate_folders(tmp_path / "ref", tmp_path / "pred", progress=False)


def test_png_dataset_with_dummy_axis(tmp_path):
    from skimage import io

    ref, pred = tmp_path / "ds" / "labelsTr", tmp_path / "pred"
    ref.mkdir(parents=True)
    pred.mkdir()
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "US"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 1, "file_ending": ".png"}))
    r = np.zeros((32, 32), np.uint8)
    r[10, 4:20] = 1
    p = np.zeros_like(r)
    p[14, 4:20] = 1
    io.imsave(ref / "x.png", r, check_contrast=False)
    io.imsave(pred / "x.png", p, check_contrast=False)
    metrics = evaluate_folders(ref, pred, progress=False)["metric_per_case"][0]["metrics"][1]
    assert metrics["HD95"] == metrics["ASSD"] == pytest.approx(4.0)


NNUNET_SUMMARY = {"foreground_mean": {"Dice": 0.5}, "mean": {"1": {"Dice": 0.5}}, "metric_per_case": []}


def test_never_overwrites_a_summary_it_did_not_write(three_cases, capsys):
    ref, pred = three_cases
    theirs = pred / "summary.json"  # as nnU-Net leaves it in fold_X/validation
    theirs.write_text(json.dumps(NNUNET_SUMMARY))
    with pytest.raises(SynthError, match="summary.json: exists and was not written by nnunet-synth.*--overwrite"):
        evaluate_folders(ref, pred, theirs, progress=False)
    assert cli.main(["evaluate", str(ref), str(pred)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads(theirs.read_text()) == NNUNET_SUMMARY
    assert cli.main(["evaluate", str(ref), str(pred), "--overwrite"]) == 0
    ours = json.loads(theirs.read_text())
    assert ours["written_by"].startswith("nnunet_synth") and "HD95" in ours["mean"]["1"]
    # A file it wrote itself is simply rewritten.
    assert cli.main(["evaluate", str(ref), str(pred)]) == 0
    # One written before the marker existed (same keys otherwise) is ours too: old cross-eval folders rerun.
    old = {k: v for k, v in ours.items() if k != "written_by"}
    theirs.write_text(json.dumps(old))
    assert cli.main(["evaluate", str(ref), str(pred)]) == 0
    # Not JSON at all: not ours either.
    theirs.write_text("notes")
    assert cli.main(["evaluate", str(ref), str(pred)]) == 2 and theirs.read_text() == "notes"


def test_output_is_a_json_file(three_cases, tmp_path, capsys):
    ref, pred = three_cases
    assert cli.main(["evaluate", str(ref), str(pred), "-o", str(tmp_path)]) == 2
    assert "is a folder; -o takes a file name" in capsys.readouterr().err
    assert cli.main(["evaluate", str(ref), str(pred), "-o", str(tmp_path / "out.txt")]) == 2
    assert "ending in .json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    assert "a file: the JSON summary to write" in " ".join(capsys.readouterr().out.split())


def test_chill_scores_the_predicted_cases_and_lists_the_missing(three_cases, capsys):
    ref, pred = three_cases
    (pred / "b.nii.gz").unlink()
    (pred / "c.nii.gz").unlink()
    assert cli.main(["evaluate", str(ref), str(pred)]) == 2
    err = capsys.readouterr().err
    assert "missing prediction" in err and "2 of 3 case(s) unpredicted: b, c" in err and "--chill" in err
    assert not (pred / "summary.json").exists()
    assert cli.main(["evaluate", str(ref), str(pred), "--chill"]) == 0
    assert "2 case(s) have no prediction and are not scored (--chill): b, c" in capsys.readouterr().out
    written = json.loads((pred / "summary.json").read_text())
    assert written["missing_predictions"] == ["b", "c"] and written["n_cases"] == 1
    assert [c["case"] for c in written["metric_per_case"]] == ["a"]
    (pred / "a.nii.gz").unlink()
    with pytest.raises(SynthError, match="none of the 3 reference case"):
        evaluate_folders(ref, pred, chill=True, progress=False)


def _write_rgb_png(path):
    from skimage import io

    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[4:9, 4:9] = 1
    io.imsave(path, rgb, check_contrast=False)


@pytest.mark.parametrize("problem,message", [
    ("empty", r"case 'a': prediction .*a.nii.gz is empty \(0 bytes\)"),
    ("truncated", r"case 'a': prediction .*a.nii.gz cannot be read \(.*\); is it truncated"),
    ("vector", r"case 'a': prediction .*a.nii.gz has 3 channels per pixel \(an RGB or multi-channel image\)"),
])
def test_unreadable_or_multichannel_prediction_is_one_line(tmp_path, problem, message, capsys):
    ref, pred = make_folders(tmp_path)
    seg = cube((2, 4, 4), (6, 12, 12))
    write_nifti(ref / "a.nii.gz", seg)
    if problem == "empty":
        (pred / "a.nii.gz").write_bytes(b"")
    elif problem == "truncated":
        write_nifti(pred / "a.nii.gz", seg)
        (pred / "a.nii.gz").write_bytes((pred / "a.nii.gz").read_bytes()[:60])
    else:
        sitk.WriteImage(sitk.GetImageFromArray(np.stack([seg[0]] * 3, -1), isVector=True), str(pred / "a.nii.gz"))
    with pytest.raises(SynthError, match=message):
        evaluate_folders(ref, pred, progress=False)
    assert cli.main(["evaluate", str(ref), str(pred)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and [ln for ln in err.splitlines() if "error:" in ln][0].count("case 'a'") == 1


def test_rgb_png_prediction_names_the_channels(tmp_path):
    from skimage import io

    ref, pred = tmp_path / "ds" / "labelsTr", tmp_path / "pred"
    ref.mkdir(parents=True)
    pred.mkdir()
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "US"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 1, "file_ending": ".png"}))
    io.imsave(ref / "x.png", np.zeros((32, 32), np.uint8), check_contrast=False)
    _write_rgb_png(pred / "x.png")
    # It used to say "has shape (1, 32, 32), reference has (1, 32, 32)".
    with pytest.raises(SynthError, match=r"prediction .*x.png has 3 channels per pixel \(an RGB"):
        evaluate_folders(ref, pred, progress=False)


def test_read_only_output_folder_is_one_line(three_cases, tmp_path, monkeypatch, capsys):
    import os

    from nnunet_synth.evaluation import evaluate as evaluate_module

    ref, pred = three_cases
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anyway: make the write fail as it would for a user
            def refuse(path, *args, **kwargs):
                raise PermissionError(13, "Permission denied", str(path))
            monkeypatch.setattr(evaluate_module, "write_json_atomic", refuse)
        code = cli.main(["evaluate", str(ref), str(pred), "-o", str(locked / "s.json")])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and len([ln for ln in err.splitlines() if "error:" in ln]) == 1
        assert "locked" in err and ("not writable" in err or "Permission denied" in err)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
