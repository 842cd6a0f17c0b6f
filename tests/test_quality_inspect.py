"""``nnunet-synth inspect`` with the demo's trained baseline (conftest's demo_run; nothing is trained here).

The synthetic cases are built from the demo's real data: exact copies of real
images, with masks whose consistency is known. The demo's baseline trains for
two iterations, so it does not find the phantom's lesions; a "consistent"
case therefore carries the baseline's own segmentation of its image as mask
(consistency 1 by construction) and an inconsistent one the same mask shifted
by half the image. A case that is a real validation case must score the Dice
that nnU-Net's own validation gave it.
"""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import copy_results
from nnunet_synth.commands.main import main
from nnunet_synth.environment import trainer_folder
from nnunet_synth.testing import make_standin_synthetic_dataset

REAL = "Dataset700_PhantomA"
BASELINE = f"{REAL}/nnUNetTrainerShort__nnUNetPlans__2d"


@pytest.fixture
def inspect_env(demo_run, tmp_path, monkeypatch):
    """A copy of the demo's real dataset and its split in the test's own folders; the demo's results, read only."""
    demo = demo_run.folders()
    raw, pre = tmp_path / "raw", tmp_path / "preprocessed"
    shutil.copytree(demo.raw / REAL, raw / REAL)
    (pre / REAL).mkdir(parents=True)
    shutil.copy(demo.preprocessed / REAL / "splits_final.json", pre / REAL / "splits_final.json")
    for key, value in (("nnUNet_raw", raw), ("nnUNet_preprocessed", pre), ("nnUNet_results", demo.results),
                       ("nnUNet_extTrainer", trainer_folder())):
        monkeypatch.setenv(key, str(value))
    folds = json.loads((pre / REAL / "splits_final.json").read_text())
    return SimpleNamespace(raw=raw, pre=pre, real=raw / REAL, baseline=demo.results / BASELINE, folds=folds,
                           tmp=tmp_path)


def synthetic_copies(env) -> Path:
    """Dataset720: two exact copies each of the validation case phA_0000 and the training case phA_0001."""
    return make_standin_synthetic_dataset(env.real, env.raw, 720, k=2, trained_on=env.folds[0]["train"],
                                          cases=["phA_0000", "phA_0001"], noise=0.0)


def replace_label(folder: Path, case: str, array: np.ndarray) -> None:
    path = folder / "labelsTr" / f"{case}.nii.gz"
    old = sitk.ReadImage(str(path))
    new = sitk.GetImageFromArray(array.astype(np.uint8).reshape(sitk.GetArrayFromImage(old).shape))
    new.CopyInformation(old)
    sitk.WriteImage(new, str(path))


def baseline_segmentation(env, case: str, use_mirroring: bool) -> np.ndarray:
    import torch

    from nnunet_synth.quality.baseline import BaselineNetwork, open_baseline
    from nnunet_synth.raw_dataset import RawDataset

    real = RawDataset(env.real)
    baseline = open_baseline(env.baseline, real, 0, env.folds, "test split", set())
    network = BaselineNetwork(baseline, torch.device("cpu"), use_mirroring)
    images, _, props = real.read_case(case)
    return network.predict(*network.preprocess(images, props))


def run_inspect(capsys, *arguments) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["inspect", *map(str, arguments)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.e2e
def test_consistency_filter_memorization_and_report(inspect_env, capsys):
    env = inspect_env
    synth = synthetic_copies(env)
    prediction = baseline_segmentation(env, "phA_0001", use_mirroring=True)
    assert prediction.any() and not prediction.all(), "the demo baseline should mark some pixels, not all"
    replace_label(synth, "phA_0001_syn000", prediction)
    shifted = np.roll(prediction, (prediction.shape[-2] // 2, prediction.shape[-1] // 2), axis=(-2, -1))
    replace_label(synth, "phA_0001_syn001", shifted)

    code, out, err = run_inspect(capsys, synth.name, "-d", REAL, "--baseline", env.baseline, "--filter", "0.9",
                                 "--fold", 0, "--device", "cpu", "--examples", 2)
    assert code == 0, err
    cases = json.loads((synth / "synthesis.json").read_text())["cases"]
    record = {c: v["extra"]["inspection"] for c, v in cases.items()}
    assert record["phA_0001_syn000"]["consistency"] == 1.0 and cases["phA_0001_syn000"]["kept"] is True
    assert record["phA_0001_syn001"]["consistency"] < 0.9 and cases["phA_0001_syn001"]["kept"] is False
    # the real validation image with its real mask scores what nnU-Net's validation reported for it
    validation = json.loads((env.baseline / "fold_0" / "validation" / "summary.json").read_text())
    reported = next(e["metrics"]["1"]["Dice"] for e in validation["metric_per_case"]
                    if e["reference_file"].endswith("phA_0000.nii.gz"))
    assert record["phA_0000_syn000"]["consistency"] == pytest.approx(reported, abs=0.02)
    assert cases["phA_0000_syn000"]["kept"] is (record["phA_0000_syn000"]["consistency"] >= 0.9)
    # memorization: copies of a training case are flagged; copies of a validation case (unseen) are not
    for case in ("phA_0001_syn000", "phA_0001_syn001"):
        assert record[case]["nearest_real"] == "phA_0001" and record[case]["near_copy"] is True
        assert record[case]["similarity"] == pytest.approx(1.0)
    assert record["phA_0000_syn000"]["nearest_real"] != "phA_0000" and not record["phA_0000_syn000"]["near_copy"]
    assert f"kept {sum(c['kept'] for c in cases.values())} of 4 cases" in out

    report_folder = synth / "inspect"
    report = (report_folder / "report.md").read_text()
    assert "| synthetic vs real validation | 4 |" in report and "| real training vs real validation | 8 |" in report
    summary = json.loads((report_folder / "summary.json").read_text())
    for row in summary["fidelity"]:
        assert all(np.isfinite(row[k]) and row[k] >= 0 for k in ("frechet", "wasserstein_inside", "wasserstein_outside"))
    assert summary["near_copies"] == 2 and summary["dropped"] >= 1
    from PIL import Image

    for name in ("consistency.png", "similarity.png", "intensity.png", "consistency_grid.png",
                 "memorization_grid.png"):
        assert f"({name})" in report
        with Image.open(report_folder / name) as im:
            pixels = np.asarray(im.convert("L"))
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 1, name

    # Another band would replace these decisions: refused without --overwrite, before any prediction.
    code, _, err = run_inspect(capsys, synth.name, "--baseline", env.baseline, "--filter", "0.5", "--fold", 0,
                               "--device", "cpu")
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1

    # Without a baseline, with DINOv2 features: memorization and intensities only; synthesis.json is left as it is.
    from nnunet_synth.testing.tiny_dinov2 import write_tiny_dinov2

    before = (synth / "synthesis.json").read_bytes()
    dinov2 = write_tiny_dinov2(env.tmp / "dinov2")
    code, _, err = run_inspect(capsys, synth.name, "--fold", 0, "--device", "cpu", "--dinov2", dinov2)
    assert code == 0, err
    assert (synth / "synthesis.json").read_bytes() == before
    assert "No baseline given" in (report_folder / "report.md").read_text()
    summary = json.loads((report_folder / "summary.json").read_text())
    assert summary["similarity_measure"] == "dinov2 cosine" and summary["baseline"] is None
    copies = {r["case"]: r for r in summary["cases"]}
    assert copies["phA_0001_syn000"]["nearest_real"] == "phA_0001"
    assert copies["phA_0001_syn000"]["similarity"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.e2e
def test_bad_inputs_give_one_line_errors(inspect_env, capsys):
    env = inspect_env
    synth = synthetic_copies(env)
    common = ("--fold", 0, "--device", "cpu")

    def refused(*arguments) -> str:
        code, _, err = run_inspect(capsys, *arguments)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    (env.tmp / "other" / env.baseline.name).mkdir(parents=True)
    other = copy_results(env.baseline, env.tmp / "other" / env.baseline.name)
    plans = json.loads((other / "plans.json").read_text())
    (other / "plans.json").write_text(json.dumps({**plans, "dataset_name": "Dataset799_Other"}))
    assert "trained on Dataset799_Other, not on Dataset700_PhantomA" in refused(
        synth.name, "--baseline", other, "--filter", "0.5", *common)

    assert "LOW is greater than HIGH" in refused(synth.name, "--baseline", env.baseline, "--filter", "0.8:0.2",
                                                 *common)
    assert "--filter needs --baseline" in refused(synth.name, "--filter", "0.5", *common)
    assert "synthesis.json: missing" in refused(REAL, "--baseline", env.baseline, *common)

    # A split whose fold 0 validates cases the baseline's fold 0 trained on (among them a synthetic case's source).
    cases = sorted(env.folds[0]["train"] + env.folds[0]["val"])
    leaky_val = ["phA_0001", "phA_0002"]
    split = [{"train": [c for c in cases if c not in leaky_val], "val": leaky_val}] * 5
    (env.pre / REAL / "splits_final.json").write_text(json.dumps(split))
    err = refused(synth.name, "--baseline", env.baseline, "--filter", "0.5", *common)
    assert "phA_0001" in err and "synthetic cases' sources" in err
    assert not (synth / "inspect").exists()
    assert all(c.get("extra", {}) == {} for c in json.loads((synth / "synthesis.json").read_text())["cases"].values())
