"""The demo, the built-in study `demo`, with a tiny budget (run once per session by conftest's demo_run): every
artifact it promises is there and valid; a rerun does nothing; and on a copy of its work folder a changed arm
setting reruns only the steps that depend on it (issue 14). It is the suite's one whole study chain."""
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import run_command, venv_command
from nnunet_synth.demo import pooled_table

ARMS = ("baseline", "diffboost", "expansion")
TRAINERS = {"baseline": "Dataset700_PhantomA/nnUNetTrainerShort__nnUNetPlans__2d",
            "diffboost": "Dataset700_PhantomA/nnUNetTrainerDiffBoostInputMixShort__nnUNetPlans__2d",
            "expansion": "Dataset705_PhantomAExpansionF0/nnUNetTrainerSynthExpandShort__nnUNetPlans__2d"}
STEP_LINE = re.compile(r"^\[\d+/\d+\] ([^:]+?)(:|$)", re.M)


def ran_steps(stdout: str) -> list[str]:
    """The steps that started (a skipped step's line says so; a finished one's line repeats its name)."""
    return [m.group(1) for m in STEP_LINE.finditer(stdout)
            if not m.string[m.end():].startswith((" done before", " finished in"))]


@pytest.mark.e2e
def test_demo_tiny_budget(demo_run):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    workdir, out = demo_run.workdir, demo_run.first
    report = (workdir / "report.md").read_text()
    assert pooled_table(report) in out  # the printed table is the report's table over the repeats
    assert pooled_table(report).startswith("## Fold 0 over 1 repeat:")  # below 5 minutes: one training per arm

    raw = workdir / "nnUNet_raw"
    datasets = sorted(p.name for p in raw.iterdir() if p.name.startswith("Dataset"))
    assert datasets == ["Dataset700_PhantomA", "Dataset701_PhantomTestA", "Dataset702_PhantomTestB",
                        "Dataset703_PhantomTestC", "Dataset704_PhantomADdpmF0", "Dataset705_PhantomAExpansionF0"]
    for name in datasets:
        verify_dataset_integrity(str(raw / name), num_processes=1)

    # every arm and repeat trained into the repeat's own results root; nnUNet_results itself stays empty
    for arm in ARMS:
        assert (workdir / "results" / "r0" / TRAINERS[arm] / "fold_0" / "checkpoint_final.pth").is_file()
    assert not any((workdir / "nnUNet_results").iterdir())
    # nnU-Net's own validation: kept for the baseline inspect reads, skipped where cross-eval does the same work
    baseline_r0 = workdir / "results" / "r0" / TRAINERS["baseline"] / "fold_0"
    assert (baseline_r0 / "validation" / "summary.json").is_file()
    skipped = workdir / "results" / "r0" / TRAINERS["diffboost"] / "fold_0"
    assert not (skipped / "validation").exists()
    assert "final validation skipped (nnUNetSynth_final_validation=0)" in \
        "".join(p.read_text() for p in skipped.glob("training_log_*.txt"))

    # inspect ran on the twins with repeat 0's baseline; below 5 minutes it has no filter: every twin is kept
    synthesis = json.loads((raw / "Dataset704_PhantomADdpmF0" / "synthesis.json").read_text())
    inspected = json.loads((raw / "Dataset704_PhantomADdpmF0" / "inspect" / "summary.json").read_text())
    assert inspected["n_synthetic"] == len(synthesis["cases"]) > 0 and inspected["band"] is None
    assert all(c["kept"] for c in synthesis["cases"].values())
    assert "## Synthetic data (inspect)" in report and "Dataset704_PhantomADdpmF0" in report

    results = json.loads((workdir / "results.json").read_text())
    assert set(results["arms"]) == set(ARMS)
    assert results["arms"]["diffboost"]["forward_passes_per_iteration"] == 1  # input mix
    assert all(results["arms"][a]["total_training_seconds"] > 0 for a in ARMS)
    assert set(results["runs"]) == {"f0_r0"}
    pooled = results["over_repeats_tests"]["0"]
    assert pooled["repeats"] == 1
    assert {(c["test_set"], c["model"]) for c in pooled["comparisons"] if c["metric"] == "Dice"} == {
        (t, a) for t in ("validation", "A", "B", "C") for a in ("diffboost", "expansion")}
    n_test = json.loads((raw / "Dataset701_PhantomTestA" / "dataset.json").read_text())["numTraining"]
    cross = workdir / "cross_eval" / "f0_r0"  # the one repeat
    for arm in ARMS:
        for scanner in "ABC":
            assert len(list((cross / "predictions" / arm / scanner).glob("*.nii.gz"))) == n_test
    assert "](cross_eval/f0_r0/plots/" in report
    pngs = list((cross / "plots").glob("*.png"))
    assert len(pngs) >= 3
    for png in pngs:
        image = np.asarray(Image.open(png).convert("L"))
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 1, png

    # a rerun skips every step and prints the same table
    steps = ran_steps(out)
    assert steps[0] == "phantom" and steps[-1] == "report"
    # the first run's phantom ran before the chain was built (which then skipped it): each step ran once
    assert demo_run.again.count("done before, skipped") == len(steps)
    assert "finished in" not in demo_run.again
    assert pooled_table(report) in demo_run.again


@pytest.mark.e2e
def test_changed_arm_reruns_only_its_steps(demo_run, tmp_path):
    """On a copy of the demo's folder (its step markers hold no path of their own), through `nnunet-synth study`
    with the demo's config: nothing reruns; then a changed expansion setting reruns its expand, its two
    training, the cross-eval (predicting that arm again only) and the report."""
    work = tmp_path / "demo"
    shutil.copytree(demo_run.workdir, work, symlinks=True)
    # cross-eval's records name the model folders it predicted with: the copy's, as if it had run there
    for record in work.glob("cross_eval/*/predictions/*/*/model.json"):
        record.write_text(record.read_text().replace(str(demo_run.workdir), str(work)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("nnUNet_", "nnUNetSynth_"))}
    env.update({k: str(work / k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")},
               nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1")
    command = [venv_command("nnunet-synth"), "study", str(work / "demo.toml"), "-w", str(work), "--device", "cpu"]
    same = run_command(command, env, timeout=600).stdout
    assert "finished in" not in same and same.count("done before, skipped") == len(ran_steps(demo_run.first))

    def stamps(arm):  # of the one repeat's validation predictions
        folder = work / "cross_eval" / "f0_r0" / "predictions" / arm / "validation"
        return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.nii.gz"))}
    before = {arm: stamps(arm) for arm in ARMS}
    assert all(before.values())

    config = (work / "demo.toml").read_text()
    assert "[arms.expansion]\n" in config
    (work / "demo.toml").write_text(config.replace("[arms.expansion]\n", "[arms.expansion]\nsynthetic_only = true\n"))
    changed = run_command(command, env, timeout=900).stdout
    assert ran_steps(changed) == [f"{name} (changed since its last run)" for name in (
        "expand-expansion-f0", "train-expansion-f0-r0", "cross-eval-f0-r0")] + ["report"]
    fold0 = json.loads((work / "nnUNet_preprocessed" / "Dataset705_PhantomAExpansionF0" / "splits_final.json")
                       .read_text())[0]
    assert fold0["train"] and all("_syn" in c for c in fold0["train"])  # synthetic-only now
    assert stamps("baseline") == before["baseline"] and stamps("diffboost") == before["diffboost"]
    after = stamps("expansion")
    assert set(after) == set(before["expansion"])
    assert all(after[c] > before["expansion"][c] for c in after)
    # the demo's own folder is untouched
    assert "synthetic_only" not in (demo_run.workdir / "demo.toml").read_text()
