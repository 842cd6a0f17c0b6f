"""cross-eval's inputs: model and label-map syntax, test-set layouts, and their errors (no training here)."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_synth.commands import main as cli
from nnunet_synth.commands.cross_eval import parse_label_map, parse_named
from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.prediction import ModelSpec, check_model
from nnunet_synth.evaluation.testsets import check_test_labels, map_labels, open_test_set


def test_model_syntax():
    spec = ModelSpec.parse("951:nnUNetTrainerShort:nnUNetPlans:2d:0,1,all", "m")
    assert (spec.dataset, spec.trainer, spec.plans, spec.configuration, spec.folds) == \
        ("951", "nnUNetTrainerShort", "nnUNetPlans", "2d", (0, 1, "all"))
    with pytest.raises(SynthError, match="expected DATASET:TRAINER:PLANS:CONFIGURATION:FOLDS"):
        ModelSpec.parse("951:nnUNetTrainer:2d:0", "m")
    with pytest.raises(SynthError, match="fold 'x'"):
        ModelSpec.parse("951:nnUNetTrainer:nnUNetPlans:2d:x", "m")


def test_named_options():
    assert parse_named(["A=952", "B=/data/x=y"], "--test") == {"A": "952", "B": "/data/x=y"}
    with pytest.raises(SynthError, match="--test 952: expected NAME=VALUE"):
        parse_named(["952"], "--test")
    with pytest.raises(SynthError, match="the name 'A' is used twice"):
        parse_named(["A=1", "A=2"], "--test")


def test_label_map_syntax():
    assert parse_label_map(["255:1", "128:2,64:3"]) == {255: 1, 128: 2, 64: 3}
    with pytest.raises(SynthError, match="FROM:TO"):
        parse_label_map(["255=1"])
    with pytest.raises(SynthError, match="mapped twice"):
        parse_label_map(["255:1,255:2"])


def write(path, array, spacing=(0.5, 0.4)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[::-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def test_plain_folder_and_label_mapping(tmp_path):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    for case in ("a", "b"):
        write(tmp_path / "t" / "images" / f"{case}_0000.nii.gz", np.ones((8, 8), np.float32))
        seg = np.zeros((8, 8), np.uint8)
        seg[2:4, 2:4], seg[5:7, 5:7] = 255, 1
        write(tmp_path / "t" / "labels" / f"{case}.nii.gz", seg)
    test = open_test_set("T", str(tmp_path / "t"), ".nii.gz")
    assert list(test.cases) == ["a", "b"] and test.cases["a"][0].endswith("a_0000.nii.gz")
    mapped = map_labels(test, {255: 1, 1: 2}, tmp_path / "mapped", SimpleITKIO())
    out = sitk.ReadImage(str(mapped.label_file("a")))
    values = sitk.GetArrayFromImage(out)
    assert values[3, 3] == 1 and values[6, 6] == 2  # swapped, not chained
    assert out.GetSpacing() == pytest.approx((0.4, 0.5))
    assert json.loads((tmp_path / "mapped" / "label_map.json").read_text())["mapping"] == {"1": 2, "255": 1}
    with pytest.raises(SynthError, match="mapped differently"):
        map_labels(test, {255: 1}, tmp_path / "mapped", SimpleITKIO())
    # Unmapped 255 is refused before any prediction, with the option that fixes it.
    with pytest.raises(SynthError, match=r"case 'a' .* label value\(s\) \[255\] .* --label-map 255:1"):
        check_test_labels(test, {0, 1}, SimpleITKIO())
    check_test_labels(mapped, {0, 1, 2}, SimpleITKIO())


def test_test_set_errors_name_the_problem(tmp_path, monkeypatch):
    write(tmp_path / "t" / "images" / "a_0000.nii.gz", np.ones((8, 8), np.float32))
    (tmp_path / "t" / "labels").mkdir()
    with pytest.raises(SynthError, match="case 'a' has no label file"):
        open_test_set("T", str(tmp_path / "t"), ".nii.gz")
    ds = tmp_path / "raw" / "Dataset960_Png"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "US"}, "labels": {"background": 0, "x": 1},
                                                  "numTraining": 0, "file_ending": ".png"}))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    with pytest.raises(SynthError, match="file ending .png, the models use .nii.gz"):
        open_test_set("P", "960", ".nii.gz")


def test_missing_model_names_the_checkpoint(nnunet_folders, capsys):
    folder = nnunet_folders.results / "Dataset961_X" / "nnUNetTrainer__nnUNetPlans__2d"
    folder.mkdir(parents=True)
    (nnunet_folders.raw / "Dataset961_X").mkdir()
    for name in ("dataset.json", "plans.json"):
        (folder / name).write_text("{}")
    with pytest.raises(SynthError, match="fold_0/checkpoint_final.pth is missing"):
        check_model("m", ModelSpec.parse("961:nnUNetTrainer:nnUNetPlans:2d:0", "m"))
    code = cli.main(["cross-eval", "--model", "a=961:nnUNetTrainer:nnUNetPlans:2d:0",
                     "--model", "b=961:nnUNetTrainer:nnUNetPlans:2d:1", "--test", "t=961", "--baseline", "c",
                     "-o", str(nnunet_folders.results / "out")])
    assert code == 2 and "--baseline c: no model of that name" in capsys.readouterr().err


def test_compare_with_baseline_holm_family_and_case_mismatch():
    from scipy import stats

    from nnunet_synth.evaluation.comparison import compare_with_baseline
    from nnunet_synth.evaluation.stats import holm

    rng = np.random.default_rng(5)

    def cases(shift, n):
        return {f"c{i}": {"Dice": 0.6 + shift + 0.1 * rng.random(), "HD95": 5 - shift + rng.random(),
                          "ASSD": 2 + rng.random()} for i in range(n)}

    values = {t: {"base": {1: cases(0.0, 8)}, "aug": {1: cases(0.05, 8)}} for t in ("A", "B")}
    rows = compare_with_baseline(values, "base", {1: "lesion"}, n_resamples=100, confidence=0.95, seed=0)
    assert len(rows) == 2 * 3
    dice = [r for r in rows if r["metric"] == "Dice"]
    raw = [stats.wilcoxon([values[t]["aug"][1][c]["Dice"] for c in sorted(values[t]["aug"][1])],
                          [values[t]["base"][1][c]["Dice"] for c in sorted(values[t]["base"][1])]).pvalue
           for t in ("A", "B")]
    assert [r["wilcoxon_p"] for r in dice] == pytest.approx(raw)
    assert [r["wilcoxon_p_holm"] for r in dice] == pytest.approx(holm(raw))
    del values["B"]["aug"][1]["c3"]
    with pytest.raises(SynthError, match=r"B/lesion/Dice/base vs aug: .*only the baseline has case\(s\) c3"):
        compare_with_baseline(values, "base", {1: "lesion"}, n_resamples=100, confidence=0.95, seed=0)


def test_prediction_options_keep_nnunet_names_and_the_record_reruns_them():
    import shlex

    from nnunet_synth.commands.cross_eval import command_line
    from nnunet_synth.commands.main import build_parser

    argv = ["cross-eval", "--model", "a=951:nnUNetTrainer:nnUNetPlans:2d:0", "--model", "b=951:T:nnUNetPlans:2d:0",
            "--test", "t=/data/my test", "--baseline", "a", "-o", "out", "-device", "cpu", "--disable_tta",
            "-chk", "checkpoint_best.pth", "-step_size", "0.25"]
    args = build_parser("cross-eval").parse_args(argv)
    assert (args.device, args.disable_tta, args.checkpoint, args.step_size) == ("cpu", True, "checkpoint_best.pth", 0.25)
    assert build_parser("cross-eval").parse_args(argv[:-7] + ["--device", "cuda", "--disable-tta"]).disable_tta
    recorded = command_line(args)
    words = shlex.split(recorded)
    assert words[:2] == ["nnunet-synth", "cross-eval"] and "/data/my test" in recorded.replace("'", "")
    again = build_parser("cross-eval").parse_args(words[1:])
    assert vars(again) == vars(args)


def fake_models(results, dataset="Dataset962_X"):
    for trainer in ("nnUNetTrainer", "nnUNetTrainerB"):
        folder = results / dataset / f"{trainer}__nnUNetPlans__2d"
        (folder / "fold_0").mkdir(parents=True)
        (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "US"}, "labels": {"background": 0,
                                                         "lesion": 1}, "numTraining": 1, "file_ending": ".nii.gz"}))
        (folder / "plans.json").write_text("{}")
        (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not read by these tests")
    return {"a": "962:nnUNetTrainer:nnUNetPlans:2d:0", "b": "962:nnUNetTrainerB:nnUNetPlans:2d:0"}


@pytest.mark.parametrize("problem,message", [
    ("missing", r"test set 't': .*nowhere.* (is missing|not found|no such)"),
    ("empty_image", r"test set 't': case 'a': image .*a_0000.nii.gz is empty \(0 bytes\)"),
    ("truncated_label", r"test set 't': case 'a': label .*a.nii.gz cannot be read .*; is it truncated"),
    ("unknown_label", r"test set 't': case 'a' .*after --label-map.* label value\(s\) \[7\]"),
])
def test_bad_test_sets_are_refused_before_anything_is_written(nnunet_folders, tmp_path, problem, message):
    from nnunet_synth.evaluation.cross_eval import run_cross_eval

    models = fake_models(nnunet_folders.results)
    (nnunet_folders.raw / "Dataset962_X").mkdir()
    where = tmp_path / "t"
    seg = np.zeros((8, 8), np.uint8)
    seg[2:4, 2:4] = 255
    write(where / "images" / "a_0000.nii.gz", np.ones((8, 8), np.float32))
    write(where / "labels" / "a.nii.gz", seg if problem != "unknown_label" else seg // 255 * 7)
    if problem == "missing":
        where = tmp_path / "nowhere"
    elif problem == "empty_image":
        (where / "images" / "a_0000.nii.gz").write_bytes(b"")
    elif problem == "truncated_label":
        (where / "labels" / "a.nii.gz").write_bytes((where / "labels" / "a.nii.gz").read_bytes()[:50])
    out = tmp_path / "out"
    with pytest.raises(SynthError, match=message):
        run_cross_eval(models, {"t": str(where)}, out, "a", label_map={255: 1}, progress=False)
    assert not out.exists()
