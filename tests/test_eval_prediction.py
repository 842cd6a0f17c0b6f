"""cross-eval predictions: a prediction run killed mid-way is never taken as complete, and a rerun completes it.

nnU-Net's predictor is replaced by one that writes known label maps (no model
is trained here); the staging, renaming and reuse around it are the real code.
"""
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import kill_once

from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.prediction import ModelPredictor, ModelSpec, PredictionSettings, staging_folder
from nnunet_synth.evaluation.testsets import open_test_set

CASES = ("a", "b", "c")
SPEC = "951:nnUNetTrainer:nnUNetPlans:2d:0"

# Writes the prediction of the first case completely and of the second one half, then waits to be killed.
DYING_RUN = r"""
import sys, time
from pathlib import Path

import nnunetv2.inference.predict_from_raw_data as nnunet_predict
import torch

from nnunet_synth.evaluation.prediction import ModelPredictor, ModelSpec, PredictionSettings
from nnunet_synth.evaluation.testsets import open_test_set

test_folder, out_folder, ready = sys.argv[1:4]
sys.path.insert(0, sys.argv[4])
from test_eval_prediction import SPEC, write_prediction


class DyingPredictor:
    def __init__(self, **kwargs):
        self.calls = 0

    def initialize_from_trained_model_folder(self, folder, use_folds, checkpoint_name):
        pass

    def predict_from_files_sequential(self, inputs, outputs, save_probabilities, overwrite):
        self.calls += 1
        if self.calls == 1:  # the first case completely
            write_prediction(Path(outputs[0] + ".nii.gz"), Path(outputs[0]).name)
            return
        complete = (Path(outputs[0]).parent / "full.nii.gz")
        write_prediction(complete, Path(outputs[0]).name)
        Path(outputs[0] + ".nii.gz").write_bytes(complete.read_bytes()[:40])
        complete.unlink()
        Path(ready).touch()
        time.sleep(600)


nnunet_predict.nnUNetPredictor = DyingPredictor
predictor = ModelPredictor("m", ModelSpec.parse(SPEC, "m"), Path("model"), PredictionSettings(use_mirroring=False),
                           torch.device("cpu"))
predictor.predict_missing(open_test_set("T", test_folder, ".nii.gz"), Path(out_folder))
"""


def expected_seg(case: str) -> np.ndarray:
    seg = np.zeros((8, 8), np.uint8)
    seg[CASES.index(case) + 1:, 2:5] = 1
    return seg


def write_prediction(path: Path, case: str) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(expected_seg(case)), str(path))


class WorkingPredictor:
    asked: list = []
    built: list = []

    def __init__(self, **kwargs):
        WorkingPredictor.built.append(kwargs)

    def initialize_from_trained_model_folder(self, folder, use_folds, checkpoint_name):
        print("nnU-Net chatter while loading")

    def predict_from_files_sequential(self, inputs, outputs, save_probabilities, overwrite):
        for out in outputs:
            print(f"nnU-Net chatter while predicting {Path(out).name}")
            WorkingPredictor.asked.append(Path(out).name)
            write_prediction(Path(out + ".nii.gz"), Path(out).name)


def model_predictor(mirroring=False, log=None, **settings):
    import torch

    return ModelPredictor("m", ModelSpec.parse(SPEC, "m"), Path("model"),
                          PredictionSettings(use_mirroring=mirroring, **settings), torch.device("cpu"), log)


@pytest.fixture
def test_set(tmp_path):
    for case in CASES:
        for sub, name in (("images", f"{case}_0000.nii.gz"), ("labels", f"{case}.nii.gz")):
            (tmp_path / "t" / sub).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.float32)), str(tmp_path / "t" / sub / name))
    return open_test_set("T", str(tmp_path / "t"), ".nii.gz")


def kill_while_predicting(test_folder: Path, out_folder: Path, ready: Path) -> None:
    command = [sys.executable, "-c", DYING_RUN, str(test_folder), str(out_folder), str(ready), str(Path(__file__).parent)]
    assert kill_once(command, None, ready.exists, "the prediction run") == -signal.SIGKILL


def test_killed_prediction_is_not_taken_as_complete_and_a_rerun_completes_it(test_set, tmp_path, monkeypatch):
    import nnunetv2.inference.predict_from_raw_data as nnunet_predict

    out = tmp_path / "predictions" / "m" / "T"
    kill_while_predicting(tmp_path / "t", out, tmp_path / "ready")
    staged = staging_folder(out)
    assert sorted(p.name for p in staged.iterdir()) == ["b.nii.gz"]  # half written when the kill came
    # The finished case was renamed as soon as nnU-Net had written it; the half-written one never was.
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a.nii.gz"]
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "a.nii.gz"))), expected_seg("a"))

    monkeypatch.setattr(nnunet_predict, "nnUNetPredictor", WorkingPredictor)
    WorkingPredictor.asked = []
    predictor = model_predictor()
    assert predictor.predict_missing(test_set, out) == 2
    assert WorkingPredictor.asked == ["b", "c"]
    assert not staged.exists()
    for case in CASES:
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz"))), expected_seg(case))

    # Complete predictions are reused; only a missing one is predicted again.
    (out / "b.nii.gz").unlink()
    WorkingPredictor.asked = []
    assert predictor.predict_missing(test_set, out) == 1
    assert WorkingPredictor.asked == ["b"]
    assert predictor.predict_missing(test_set, out) == 0

    # Predictions of one setting are never mixed with another's.
    for other in (model_predictor(mirroring=True), model_predictor(tile_step_size=0.25),
                  model_predictor(checkpoint="checkpoint_best.pth")):
        with pytest.raises(SynthError, match="holds predictions of another model or setting"):
            other.predict_missing(test_set, out)


def test_predictor_is_built_once_for_all_test_sets_and_its_output_goes_to_the_log(test_set, tmp_path, monkeypatch,
                                                                                   capsys):
    import nnunetv2.inference.predict_from_raw_data as nnunet_predict

    monkeypatch.setattr(nnunet_predict, "nnUNetPredictor", WorkingPredictor)
    WorkingPredictor.built = []
    with open(tmp_path / "predict.log", "w") as log:
        predictor = model_predictor(log=log, tile_step_size=0.25)
        seen = []
        for t in ("A", "B", "C"):
            assert predictor.predict_missing(test_set, tmp_path / "p" / t, on_case=seen.append) == 3
    assert len(WorkingPredictor.built) == 1 and predictor.builds == 1
    assert WorkingPredictor.built[0]["tile_step_size"] == 0.25 and WorkingPredictor.built[0]["use_mirroring"] is False
    assert seen == list(CASES) * 3
    out = capsys.readouterr()
    assert "chatter" not in out.out + out.err
    text = (tmp_path / "predict.log").read_text()
    assert text.count("chatter while loading") == 1 and text.count("chatter while predicting") == 9


class FailingPredictor(WorkingPredictor):
    """Fails on case b the way nnU-Net's predictor fails on an image it cannot read."""

    plans_manager = None

    def predict_from_files_sequential(self, inputs, outputs, save_probabilities, overwrite):
        if Path(outputs[0]).name == "b":
            Path(outputs[0] + ".nii.gz").write_bytes(b"partial")
            raise RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute:\nsitk::ERROR: cannot read")
        super().predict_from_files_sequential(inputs, outputs, save_probabilities, overwrite)


def test_a_case_nnunet_cannot_predict_is_one_line_and_leaves_no_staging(test_set, tmp_path, monkeypatch):
    import nnunetv2.inference.predict_from_raw_data as nnunet_predict

    monkeypatch.setattr(nnunet_predict, "nnUNetPredictor", FailingPredictor)
    out = tmp_path / "predictions" / "m" / "T"
    with open(tmp_path / "predict.log", "w") as log:
        with pytest.raises(SynthError, match=r"model 'm', test set 'T': case 'b': nnU-Net's predictor failed "
                                             r"\(RuntimeError: .*\); details in .*predict.log"):
            model_predictor(log=log).predict_missing(test_set, out)
    assert not staging_folder(out).exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "model.json"]  # a was complete; b never lands
    assert "Traceback" in (tmp_path / "predict.log").read_text()


def test_prediction_settings_are_checked():
    with pytest.raises(SynthError, match="-step_size 0: use a value in"):
        PredictionSettings(tile_step_size=0).check()
    with pytest.raises(SynthError, match="-chk best: expected a checkpoint file name"):
        PredictionSettings(checkpoint="best").check()


class UnloadablePredictor(WorkingPredictor):
    def initialize_from_trained_model_folder(self, folder, use_folds, checkpoint_name):
        raise RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory")


def test_a_model_nnunet_cannot_load_is_one_line(test_set, tmp_path, monkeypatch):
    import nnunetv2.inference.predict_from_raw_data as nnunet_predict

    monkeypatch.setattr(nnunet_predict, "nnUNetPredictor", UnloadablePredictor)
    out = tmp_path / "p" / "T"
    with open(tmp_path / "predict.log", "w") as log:
        with pytest.raises(SynthError, match=r"model 'm': nnU-Net could not load model \(RuntimeError: "
                                             r"PytorchStreamReader failed.*\); details in .*predict.log"):
            model_predictor(log=log).predict_missing(test_set, out)
    assert not staging_folder(out).exists() and not out.exists()


def test_records_from_before_chk_and_step_size_are_reused(test_set, tmp_path, monkeypatch):
    import json

    import nnunetv2.inference.predict_from_raw_data as nnunet_predict

    monkeypatch.setattr(nnunet_predict, "nnUNetPredictor", WorkingPredictor)
    out = tmp_path / "p" / "T"
    assert model_predictor().predict_missing(test_set, out) == 3
    record = json.loads((out / "model.json").read_text())
    del record["checkpoint"], record["tile_step_size"]  # as the previous version wrote it
    (out / "model.json").write_text(json.dumps(record))
    (out / "c.nii.gz").unlink()
    assert model_predictor().predict_missing(test_set, out) == 1  # nnU-Net's defaults: the same setting
    with pytest.raises(SynthError, match="holds predictions of another model or setting"):
        model_predictor(tile_step_size=0.25).predict_missing(test_set, out)
