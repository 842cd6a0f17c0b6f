"""Issue 16: bad input to fit, generate and expand is one line (exit 2) and changes nothing.

Each class of the issue on tiny data: non-finite or non-integer sources, labels
dataset.json does not declare, label geometry, dataset ids nnU-Net cannot live
with, unwritable outputs, devices that are not there, stubs that block the
corrected command, model hashes and trained_on records, and unknown
configurations. The test generator (test-blur) stands in for a diffusion model.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_generators_blur import BlurTestGenerator, blur_registered  # noqa: F401  (fixture)

from nnunet_synth.commands.main import main
from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import Manifest
from nnunet_synth.splits import default_folds
from nnunet_synth.testing import make_raw_dataset_2d, make_raw_dataset_3d, make_standin_synthetic_dataset

REAL = "Dataset911_Tiny3D"


def tree_state(*roots) -> dict[str, str]:
    state = {}
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            state.update({os.path.join(dirpath, d) + "/": "" for d in dirs})
            for f in files:
                p = os.path.join(dirpath, f)
                state[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return state


def refused(capsys, argv, *fragments, roots=()):
    """``argv`` exits 2 with one line holding ``fragments``, and nothing under ``roots`` changes."""
    before = tree_state(*roots)
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().replace("\r", "\n").splitlines()
    assert code == 2, err
    line = err[-1]
    assert line.startswith(f"nnunet-synth {argv[0]}: error: "), err
    for fragment in fragments:
        assert str(fragment) in line, line
    assert tree_state(*roots) == before
    return line


def mha_dataset(raw_root: Path, dataset_id: int = 911, n_cases: int = 5) -> Path:
    """The tiny 3D dataset in MetaImage (.mha), which keeps NaN (SimpleITK reads NaN in NIfTI as 0)."""
    folder = make_raw_dataset_3d(raw_root, dataset_id, n_cases=n_cases, shape=(4, 10, 8))
    for path in sorted(folder.glob("*Tr/*.nii.gz")):
        sitk.WriteImage(sitk.ReadImage(str(path)), str(path).replace(".nii.gz", ".mha"))
        path.unlink()
    dataset_json = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**dataset_json, "file_ending": ".mha"}))
    return folder


def edit_image(path: Path, change) -> None:
    """Rewrite an image file with ``change(array)`` (same geometry), as float32 when the change needs it."""
    image = sitk.ReadImage(str(path))
    array = change(sitk.GetArrayFromImage(image).astype(np.float32))
    edited = sitk.GetImageFromArray(array)
    edited.CopyInformation(image)
    sitk.WriteImage(edited, str(path))


def fake_plans(folders, dataset: Path, configurations: dict | None = None) -> None:
    pre = folders.preprocessed / dataset.name
    pre.mkdir(parents=True, exist_ok=True)
    (pre / "nnUNetPlans.json").write_text(json.dumps({"dataset_name": dataset.name,
                                                      "configurations": configurations or {}}))
    (pre / "dataset_fingerprint.json").write_text("{}")


@pytest.fixture
def mha(nnunet_folders, blur_registered, tmp_path):  # noqa: F811
    """A 3D .mha dataset and a test-blur model fitted on two of its cases (case_003, case_004 unseen)."""
    real = mha_dataset(nnunet_folders.raw)
    model = tmp_path / "model"
    assert main(["fit", "test-blur", "-d", "911", "--cases", "case_000", "case_001", "-o", str(model)]) == 0
    return nnunet_folders, real, model


def fit_argv(model, *cases):
    return ["fit", "test-blur", "-d", 911, "--cases", *(cases or ("case_003", "case_004")), "-o", model]


def generate_argv(model, out=920, *extra):
    return ["generate", "test-blur", "-m", model, "-d", 911, "-o", out, "--mode", "twins", "-k", 1,
            "--cases", "case_003", *extra]


# -- 3. no poisoned data ------------------------------------------------------------------------------
@pytest.mark.parametrize("value, name", [(np.nan, "NaN"), (np.inf, "+inf")])
def test_non_finite_source_is_refused_by_fit_generate_and_expand(mha, capsys, tmp_path, value, name):
    folders, real, model = mha
    image = real / "imagesTr" / "case_003_0000.mha"
    edit_image(image, lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7, value, a))
    roots = (folders.raw, folders.preprocessed, tmp_path)
    refused(capsys, fit_argv(tmp_path / "m2"), image, "1 voxel(s) are NaN or infinite", roots=roots)
    refused(capsys, generate_argv(model), image, "NaN or infinite", roots=roots)
    # expand: the synthetic dataset's own images are checked too (a poisoned twin)
    edit_image(image, lambda a: np.nan_to_num(a, posinf=0))
    fake_plans(folders, real)
    synth = make_standin_synthetic_dataset(real, folders.raw, 902, cases=["case_003"])
    twin = synth / "imagesTr" / "case_003_syn000_0000.mha"
    edit_image(twin, lambda a: np.where(a > np.median(a), value, a))
    refused(capsys, ["expand", "-d", 911, "-s", 902, "-o", 903], twin, "NaN or infinite", roots=roots)


def test_float_and_undeclared_labels_are_refused(mha, capsys, tmp_path):
    folders, real, model = mha
    label = real / "labelsTr" / "case_003.mha"
    original = label.read_bytes()
    roots = (folders.raw, tmp_path)
    edit_image(label, lambda a: np.where(a > 0, 0.5, a))  # 0.5 would otherwise round to an empty mask
    refused(capsys, fit_argv(tmp_path / "m2"), label, "label values must be integers (found 0.5)", roots=roots)
    refused(capsys, generate_argv(model), label, "label values must be integers (found 0.5)", roots=roots)
    label.write_bytes(original)
    edit_image(label, lambda a: np.where(a > 0, 3, a).astype(np.uint8))
    refused(capsys, fit_argv(tmp_path / "m2"), label, "label value(s) [3] are not among the values allowed by",
            "dataset.json", roots=roots)
    refused(capsys, generate_argv(model), label, "[3]", "dataset.json", roots=roots)


@pytest.mark.parametrize("change", ["origin", "direction", "spacing"])
def test_label_geometry_is_checked_everywhere_naming_both_files(mha, capsys, tmp_path, change):
    folders, real, model = mha
    label, image = real / "labelsTr" / "case_003.mha", real / "imagesTr" / "case_003_0000.mha"
    itk = sitk.ReadImage(str(label))
    if change == "origin":
        itk.SetOrigin((5.0, -2.0, 3.0))
    elif change == "direction":
        itk.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    else:
        itk.SetSpacing((0.8, 0.8, 3.0))
    sitk.WriteImage(itk, str(label))
    fake_plans(folders, real)
    make_standin_synthetic_dataset(real, folders.raw, 902, cases=["case_000"])
    roots = (folders.raw, folders.preprocessed, tmp_path)
    for argv in (fit_argv(tmp_path / "m2"), generate_argv(model), ["expand", "-d", 911, "-s", 902, "-o", 903]):
        refused(capsys, argv, f"{label}: {change}", f"differs from {image}'s", roots=roots)


def test_structure_problems_are_named_before_folds_are_made(nnunet_folders, blur_registered, capsys,  # noqa: F811
                                                           tmp_path):
    real = make_raw_dataset_2d(nnunet_folders.raw, 901, n_cases=5, shape=(24, 20))
    dataset_json = json.loads((real / "dataset.json").read_text())
    roots = (nnunet_folders.raw, tmp_path)
    argv = ["fit", "test-blur", "-d", 901, "--fold", 0, "-o", tmp_path / "m"]
    (real / "dataset.json").write_text(json.dumps({**dataset_json, "file_ending": ".nii.gz"}))
    refused(capsys, argv, "dataset.json", "ends with the file_ending '.nii.gz' (found .png)", roots=roots)
    (real / "dataset.json").write_text(json.dumps({**dataset_json, "numTraining": 7}))
    refused(capsys, argv, "numTraining is 7, but 5 training cases were found", roots=roots)


# -- 2. dataset ids -----------------------------------------------------------------------------------
def test_dataset_ids_nnunet_cannot_use_are_refused_before_anything_is_written(mha, capsys, tmp_path):
    folders, real, model = mha
    fake_plans(folders, real)
    make_standin_synthetic_dataset(real, folders.raw, 902, cases=["case_000"])
    (folders.results / "Dataset950_Trained").mkdir()  # the id is taken in nnUNet_results only
    roots = (folders.raw, folders.preprocessed, folders.results)
    for out in (0, 1000, -5):
        refused(capsys, generate_argv(model, out), f"-o {out}: nnU-Net dataset ids are 1 to 999", roots=roots)
        refused(capsys, ["expand", "-d", 911, "-s", 902, "-o", out], f"-o {out}: nnU-Net dataset ids are 1 to 999",
                roots=roots)
    refused(capsys, generate_argv(model, 950), "already used by", "Dataset950_Trained", roots=roots)
    refused(capsys, ["expand", "-d", 911, "-s", 902, "-o", 950], "already used by", "Dataset950_Trained", roots=roots)
    refused(capsys, generate_argv(model, 902), "already used by", "Dataset902_Tiny3DStandIn", roots=roots)
    refused(capsys, ["expand", "-d", 911, "-s", 902, "-o", 902, "--overwrite"], "one of the input datasets",
            roots=roots)
    make_raw_dataset_2d(folders.raw, 905, n_cases=1, shape=(8, 8))  # --overwrite never replaces another dataset
    refused(capsys, ["expand", "-d", 911, "-s", 902, "-o", 905, "--overwrite"], "already used by",
            "Dataset905_Tiny2D, which `nnunet-synth expand` did not write", roots=roots)
    refused(capsys, generate_argv(model, 921, "--name", "has space"), "a dataset name must be", roots=roots)


# -- 4. no tracebacks: unwritable outputs and devices ------------------------------------------------
def unwritable_folder(tmp_path: Path) -> Path:
    """A folder nothing can be written into: read-only by mode, or (as root, who ignores the mode) a path
    below a regular file."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if not os.access(folder, os.W_OK):
        return folder
    folder.chmod(stat.S_IRWXU)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    return blocker / "inside"


def test_unwritable_outputs_are_one_line(mha, capsys, tmp_path, monkeypatch):
    folders, real, model = mha
    fake_plans(folders, real)
    make_standin_synthetic_dataset(real, folders.raw, 902, cases=["case_000"])
    synth = folders.raw / "Dataset902_Tiny3DStandIn"
    target = unwritable_folder(tmp_path)
    roots = (folders.raw, folders.preprocessed, tmp_path)
    refused(capsys, fit_argv(target / "model"), "-o ", "choose", roots=roots)
    refused(capsys, fit_argv(real / "dataset.json"), "is a file, not a model folder", roots=roots)  # fit -o FILE
    # generate and expand write below nnUNet_raw: point it at the unwritable folder, the inputs by folder
    monkeypatch.setenv("nnUNet_raw", str(target))
    refused(capsys, ["generate", "test-blur", "-m", model, "-d", real, "-o", 920, "--mode", "twins", "-k", 1],
            "nnUNet_raw=", "choose", roots=roots)
    refused(capsys, ["expand", "-d", real, "-s", synth, "-o", 903], "nnUNet_raw=", "choose", roots=roots)


def test_devices_that_are_not_there_are_refused(mha, capsys, tmp_path):
    import torch

    folders, real, model = mha
    roots = (folders.raw, tmp_path)
    refused(capsys, generate_argv(model, 920, "--device", "gpu0"), "--device 'gpu0': expected auto, cpu, cuda or cuda:N",
            roots=roots)
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        refused(capsys, generate_argv(model, 920, "--device", f"cuda:{count}"), f"has {count} CUDA GPU(s)", roots=roots)
    else:
        refused(capsys, generate_argv(model, 920, "--device", "cuda"), "no CUDA GPU", "--device cpu", roots=roots)


# -- 5. failed runs leave nothing that blocks the corrected run ----------------------------------------
def test_a_refused_generate_leaves_no_stub_and_the_corrected_command_runs(mha, capsys, monkeypatch):
    folders, real, model = mha
    original = BlurTestGenerator.generate

    def refuses(self, request):  # like patch-ddpm refusing --steps 0 or a 3D model on 2D masks
        raise SynthError("test-blur: --noise must be positive")

    monkeypatch.setattr(BlurTestGenerator, "generate", refuses)
    refused(capsys, generate_argv(model, 920, "--noise", -1), "--noise must be positive", roots=(folders.raw,))
    assert not list(folders.raw.glob("Dataset920_*"))
    monkeypatch.setattr(BlurTestGenerator, "generate", original)
    assert main([str(a) for a in generate_argv(model, 920, "--noise", 0.2)]) == 0


def test_deleting_checkpoints_keeps_the_model_hash(mha, capsys):
    folders, real, model = mha
    (model / "checkpoint").mkdir()
    (model / "checkpoint" / "model.safetensors").write_bytes(b"resume state")
    argv = [str(a) for a in generate_argv(model)]
    assert main(argv) == 0
    for p in sorted((model / "checkpoint").iterdir()):
        p.unlink()
    (model / "checkpoint").rmdir()
    capsys.readouterr()
    assert main(argv) == 0 and "already complete" in capsys.readouterr().out


def test_a_refused_fit_changes_nothing(mha, capsys, monkeypatch, tmp_path):
    folders, real, model = mha
    original_fit = BlurTestGenerator.fit.__func__

    def refuses_after_writing_config(cls, cases, labels, model_dir, settings):
        # like patch-ddpm refusing --train-steps below what the folder was trained for
        (model_dir / "config.json").write_text('{"rewritten": true}')
        (model_dir / "extra.json").write_text("{}")
        raise SynthError(f"model folder {model_dir} is already trained further")

    monkeypatch.setattr(BlurTestGenerator, "fit", classmethod(refuses_after_writing_config))
    before = tree_state(model)
    refused(capsys, ["fit", "test-blur", "-d", 911, "--cases", "case_000", "case_001", "-o", model],
            "already trained further")
    assert tree_state(model) == before  # config.json unchanged, nothing added
    refused(capsys, fit_argv(tmp_path / "fresh"), "already trained further")
    assert not (tmp_path / "fresh").exists()
    monkeypatch.setattr(BlurTestGenerator, "fit", classmethod(original_fit))
    assert main([str(a) for a in fit_argv(tmp_path / "fresh")]) == 0


# -- 1. leakage that does not depend on the trainer --------------------------------------------------
def test_twins_renamed_to_another_source_are_refused(nnunet_folders, capsys):
    real = make_raw_dataset_2d(nnunet_folders.raw, 901, n_cases=6, shape=(32, 32))
    fake_plans(nnunet_folders, real)
    synth = make_standin_synthetic_dataset(real, nnunet_folders.raw, 902, cases=["case_000"])
    for sub, suffix in (("imagesTr", "_0000.png"), ("labelsTr", ".png")):
        (synth / sub / f"case_000_syn000{suffix}").rename(synth / sub / f"case_001_syn005{suffix}")
    manifest = Manifest.load(synth)
    case = manifest.cases.pop("case_000_syn000")
    case.source_case = "case_001"
    manifest.cases["case_001_syn005"] = case
    manifest.save(synth)
    refused(capsys, ["expand", "-d", 901, "-s", 902, "-o", 903], "case_001_syn005.png",
            "differs from", "case_001.png", "declared source case 'case_001'",
            roots=(nnunet_folders.raw, nnunet_folders.preprocessed))


def test_trained_on_must_match_the_model_folder(nnunet_folders, blur_registered, capsys, tmp_path):  # noqa: F811
    real = make_raw_dataset_2d(nnunet_folders.raw, 901, n_cases=6, shape=(24, 20))
    fake_plans(nnunet_folders, real)
    model = tmp_path / "model"
    assert main(["fit", "test-blur", "-d", "901", "--fold", "0", "-o", str(model)]) == 0
    assert main(["generate", "test-blur", "-m", str(model), "-d", "901", "-o", "902", "--mode", "twins", "-k", "1",
                 "--cases", "case_000"]) == 0
    # the folder is refitted on other cases (here: its record rewritten) after the dataset was generated
    record = json.loads((model / "training_cases.json").read_text())
    assert record["cases"] == default_folds([f"case_{i:03d}" for i in range(6)])[0]["train"]
    (model / "training_cases.json").write_text(json.dumps({**record, "cases": [f"case_{i:03d}" for i in range(6)]}))
    refused(capsys, ["expand", "-d", 901, "-s", 902, "-o", 903], "'trained_on' differs from the cases in",
            "training_cases.json", roots=(nnunet_folders.raw, nnunet_folders.preprocessed))


# -- 5. leftovers: unknown configurations -----------------------------------------------------------
def test_unknown_preprocess_configuration_is_refused_before_anything_is_written(nnunet_folders, capsys):
    real = make_raw_dataset_2d(nnunet_folders.raw, 901, n_cases=6, shape=(32, 32))
    fake_plans(nnunet_folders, real, {"2d": {}})
    make_standin_synthetic_dataset(real, nnunet_folders.raw, 902, cases=["case_000"])
    roots = (nnunet_folders.raw, nnunet_folders.preprocessed)
    refused(capsys, ["expand", "-d", 901, "-s", 902, "-o", 903, "--preprocess", "4d"],
            "--preprocess 4d: not a configuration of", "nnUNetPlans.json (available: 2d)", roots=roots)
    refused(capsys, ["expand", "-d", 901, "-s", 902, "-o", 903, "-c", "2d", "-np", 0], "-np 0", roots=roots)


# -- 6. messages ---------------------------------------------------------------------------------------
def test_twins_errors_get_a_line_of_their_own(tmp_path, capsys, monkeypatch):
    """An error while twins are preprocessed is printed after the progress bar's line, not on it."""
    from types import SimpleNamespace

    from nnunet_synth.diffboost import twins
    from nnunet_synth.manifest import file_hash

    synth, configuration = tmp_path / "Dataset902_Synth", tmp_path / "nnUNetPlans_2d"
    synth.mkdir()
    configuration.mkdir()
    (synth / "synthesis.json").write_text("{}")
    job = SimpleNamespace(twins={"case_000_syn000": None}, output_folder="")
    manifest = SimpleNamespace(synthesis_manifest_hash=file_hash(synth / "synthesis.json"))
    monkeypatch.setattr(twins, "plan_jobs", lambda *args: ([job], manifest, configuration))

    def fails(job):
        raise SynthError("case_000_syn000.png: the mask of twin 'case_000_syn000' differs")

    monkeypatch.setattr(twins, "preprocess_case", fails)
    capsys.readouterr()
    assert main(["twins", "-d", "901", "-s", str(synth), "-c", "2d"]) == 2
    lines = capsys.readouterr().err.split("\n")
    assert "preprocessing twins" in lines[-3] and lines[-2].startswith("nnunet-synth twins: error: case_000_syn000"), lines
    assert [p.name for p in configuration.iterdir()] == []  # the staging folder is gone


def test_a_file_system_failure_under_a_command_is_one_line(capsys):
    """What the up-front checks cannot see (a disk that fills, a mount that turns read-only) is still one line."""
    import errno

    from nnunet_synth.commands.runner import run_parsed

    def fails(error):
        def run(args):
            raise error
        return run

    capsys.readouterr()
    assert run_parsed("generate", fails(OSError(errno.ENOSPC, "No space left on device", "/data/x.nii.gz")), None) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nnunet-synth generate: error: /data/x.nii.gz: No space left on device; check that the output "
                   "location exists, is writable and has free space, then rerun the same command"]
    with pytest.raises(ConnectionResetError):  # not a file-system problem: a bug, with its traceback
        run_parsed("generate", fails(ConnectionResetError(errno.ECONNRESET, "reset")), None)


def test_convert_and_phantom_refuse_an_id_taken_in_any_nnunet_folder(nnunet_folders, tmp_path):
    """nnU-Net refuses an id two names share in raw, preprocessed or results: the writers of raw datasets look in all."""
    from nnunet_synth.convert.staging import StagedDataset
    from nnunet_synth.phantom.datasets import make_phantom_datasets

    (nnunet_folders.preprocessed / "Dataset950_Other").mkdir()
    with pytest.raises(SynthError, match=r"Dataset950_Other: dataset id 950 is taken; choose another --first-id"):
        make_phantom_datasets(nnunet_folders.raw, first_id=950, n_train=1, n_test=1, progress=False)
    (nnunet_folders.results / "Dataset960_Old").mkdir()
    with pytest.raises(SynthError, match=r"nnUNet_results: dataset id 960 is taken by Dataset960_Old; choose another id"):
        with StagedDataset(nnunet_folders.raw, 960, "New", tmp_path):
            pass
    assert list(nnunet_folders.raw.iterdir()) == []     # nothing written
