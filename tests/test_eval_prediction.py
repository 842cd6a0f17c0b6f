"""cross-eval predictions: a prediction run killed mid-way is never taken as complete, and a rerun completes it.

nnU-Net's predictor is replaced by one that writes known label maps (no model
is trained here); the staging, renaming and reuse around it are the real code.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.prediction import ModelSpec, predict_missing, staging_folder
from nnunet_synth.evaluation.testsets import open_test_set

CASES = ("a", "b", "c")
SPEC = "951:nnUNetTrainer:nnUNetPlans:2d:0"

# Writes the prediction of the first case completely and of the second one half, then waits to be killed.
DYING_RUN = r"""
import sys, time
from pathlib import Path

import nnunetv2.inference.predict_from_raw_data as nnunet_predict
import torch

from nnunet_synth.evaluation.prediction import ModelSpec, predict_missing
from nnunet_synth.evaluation.testsets import open_test_set

test_folder, out_folder, ready = sys.argv[1:4]
sys.path.insert(0, sys.argv[4])
from test_eval_prediction import SPEC, write_prediction


class DyingPredictor:
    def __init__(self, **kwargs):
        pass

    def initialize_from_trained_model_folder(self, folder, use_folds):
        pass

    def predict_from_files_sequential(self, inputs, outputs, save_probabilities, overwrite):
        write_prediction(Path(outputs[0] + ".nii.gz"), Path(outputs[0]).name)
        complete = (Path(outputs[1]).parent / "full.nii.gz")
        write_prediction(complete, Path(outputs[1]).name)
        Path(outputs[1] + ".nii.gz").write_bytes(complete.read_bytes()[:40])
        complete.unlink()
        Path(ready).touch()
        time.sleep(600)


nnunet_predict.nnUNetPredictor = DyingPredictor
predict_missing("m", ModelSpec.parse(SPEC, "m"), Path("model"), open_test_set("T", test_folder, ".nii.gz"),
                Path(out_folder), torch.device("cpu"), False)
"""


def expected_seg(case: str) -> np.ndarray:
    seg = np.zeros((8, 8), np.uint8)
    seg[CASES.index(case) + 1:, 2:5] = 1
    return seg


def write_prediction(path: Path, case: str) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(expected_seg(case)), str(path))


class WorkingPredictor:
    asked: list = []

    def __init__(self, **kwargs):
        pass

    def initialize_from_trained_model_folder(self, folder, use_folds):
        pass

    def predict_from_files_sequential(self, inputs, outputs, save_probabilities, overwrite):
        for out in outputs:
            WorkingPredictor.asked.append(Path(out).name)
            write_prediction(Path(out + ".nii.gz"), Path(out).name)


@pytest.fixture
def test_set(tmp_path):
    for case in CASES:
        for sub, name in (("images", f"{case}_0000.nii.gz"), ("labels", f"{case}.nii.gz")):
            (tmp_path / "t" / sub).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.float32)), str(tmp_path / "t" / sub / name))
    return open_test_set("T", str(tmp_path / "t"), ".nii.gz")


def kill_while_predicting(test_folder: Path, out_folder: Path, ready: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", DYING_RUN, str(test_folder), str(out_folder), str(ready),
                             str(Path(__file__).parent)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"the prediction run ended before it was killed:\n{proc.stdout.read()[-4000:]}")
            assert time.monotonic() < deadline, "the prediction run did not start within 300 s"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_killed_prediction_is_not_taken_as_complete_and_a_rerun_completes_it(test_set, tmp_path, monkeypatch):
    import nnunetv2.inference.predict_from_raw_data as nnunet_predict
    import torch

    cpu = torch.device("cpu")
    out = tmp_path / "predictions" / "m" / "T"
    kill_while_predicting(tmp_path / "t", out, tmp_path / "ready")
    staged = staging_folder(out)
    assert sorted(p.name for p in staged.iterdir()) == ["a.nii.gz", "b.nii.gz"]  # one whole, one half written
    assert not list(out.glob("*.nii.gz")), "a prediction of the killed run is where a rerun would reuse it"

    monkeypatch.setattr(nnunet_predict, "nnUNetPredictor", WorkingPredictor)
    WorkingPredictor.asked = []
    spec = ModelSpec.parse(SPEC, "m")
    assert predict_missing("m", spec, Path("model"), test_set, out, cpu, False) == 3
    assert WorkingPredictor.asked == list(CASES)
    assert not staged.exists()
    for case in CASES:
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz"))), expected_seg(case))

    # Complete predictions are reused; only a missing one is predicted again.
    (out / "b.nii.gz").unlink()
    WorkingPredictor.asked = []
    assert predict_missing("m", spec, Path("model"), test_set, out, cpu, False) == 1
    assert WorkingPredictor.asked == ["b"]
    assert predict_missing("m", spec, Path("model"), test_set, out, cpu, False) == 0

    # Predictions of one setting are never mixed with another's.
    with pytest.raises(SynthError, match="holds predictions of another model or setting"):
        predict_missing("m", spec, Path("model"), test_set, out, cpu, True)
