"""The study's step chain without running nnU-Net (issue 14): hashes that follow the dependencies, markers
that hold them, --only, and trainings side by side with --gpus (cheap stand-in commands)."""
import json
import sys

import pytest

from nnunet_synth.errors import SynthError
from nnunet_synth.recipes import StepRunner, step_hash
from nnunet_synth.study.config import load_config
from nnunet_synth.study.run import StudyRun
from test_study_config import config, fake_raw


def test_marker_holds_the_hash_and_a_changed_step_reruns(tmp_path):
    runner = StepRunner(tmp_path / "state", rerun_hint="R")
    log = tmp_path / "log"
    command = [sys.executable, "-c", f"open({str(log)!r}, 'a').write('x')"]
    assert runner.run(1, 1, "s", command, {}, digest="a") is True
    assert json.loads((tmp_path / "state" / "s.done").read_text())["hash"] == "a"
    assert runner.run(1, 1, "s", command, {}, digest="a") is False
    assert runner.changed("s", "b") and not runner.changed("s", "a")
    assert runner.run(1, 1, "s", command, {}, digest="b") is True
    assert log.read_text() == "xx"
    # without a digest the command is the hash: a changed command reruns
    assert runner.run(1, 1, "t", command, {}) is True
    assert runner.run(1, 1, "t", command + ["extra"], {}) is True
    # a marker of the former format (a duration only) is not a match for any hash
    (tmp_path / "state" / "old.done").write_text("12.5\n")
    assert runner.done("old") and not runner.done("old", step_hash(command)) and runner.recorded("old")["seconds"] == 12.5


@pytest.fixture
def study(nnunet_folders, tmp_path):
    fake_raw(nnunet_folders.raw, 951, "Tiny")

    def make(**parts):
        return load_config(config(tmp_path, **parts))
    return make


def digests(study, tmp_path) -> dict:
    return {s.name: s.digest for s in StudyRun(study, tmp_path / "work", "cpu", ["nnunet-synth", "study", "x"],
                                               "R").chain.steps}


def test_a_changed_arm_changes_only_the_steps_after_it(study, tmp_path):
    before = digests(study(), tmp_path)
    assert list(before) == ["plan", "validation-sets", "fit-ddpm-f0", "generate-ddpm-f0", "expand-expanded-f0",
                            "train-baseline-f0-r0", "train-expanded-f0-r0", "cross-eval-f0-r0", "report"]
    after = digests(study(arm_extra="synthetic_only = true"), tmp_path)
    assert {n for n in before if before[n] != after[n]} == {"expand-expanded-f0", "train-expanded-f0-r0",
                                                           "cross-eval-f0-r0", "report"}
    fewer_processes = digests(study(study_extra="num_processes = 1"), tmp_path)
    assert fewer_processes["plan"] != before["plan"]  # planning's -np is part of its command, so all after it
    # the work folder's own path is not part of a hash
    assert digests(study(), tmp_path / "elsewhere") == before


def test_repeats_train_into_their_own_results_roots(study, tmp_path):
    run = StudyRun(study(study_extra="repeats = 2"), tmp_path / "work", "cpu", ["nnunet-synth"], "R")
    roots = {s.name: s.env["nnUNet_results"] for s in run.chain.steps if s.name.startswith("train-")}
    assert roots["train-baseline-f0-r0"].endswith("work/results/r0")
    assert roots["train-baseline-f0-r1"].endswith("work/results/r1")
    assert [s.name for s in run.chain.steps if s.name.startswith("cross-eval")] == ["cross-eval-f0-r0",
                                                                                    "cross-eval-f0-r1"]


def test_only_refuses_a_step_whose_dependencies_did_not_finish(study, tmp_path):
    run = StudyRun(study(), tmp_path / "work", "cpu", ["nnunet-synth"], "R")
    with pytest.raises(SynthError, match="step 'train-expanded-f0-r0' waits for expand-expanded-f0"):
        run.run(["train-expanded-*"])
    with pytest.raises(SynthError, match="--only nosuchstep: no such step"):
        run.run(["nosuchstep"])


def test_gpus_run_independent_trainings_side_by_side(study, tmp_path):
    run = StudyRun(study(study_extra="repeats = 2"), tmp_path / "work", "cpu", ["nnunet-synth"], "R",
                   gpus=["0", "1"])
    log = tmp_path / "gpus.log"
    trainings = [s for s in run.chain.steps if s.training]
    for step in trainings:
        step.command = [sys.executable, "-c", "import os, sys, time; t = time.time(); time.sleep(1.0); "
                        f"open({str(log)!r}, 'a').write(f\"{step.name} {{os.environ['CUDA_VISIBLE_DEVICES']}} "
                        "{t} {time.time()}\\n\")"]
        step.after = []

    assert run.run([s.name for s in trainings]) == 4
    rows = [line.split() for line in log.read_text().splitlines()]
    assert sorted(r[0] for r in rows) == sorted(s.name for s in trainings)
    assert {r[1] for r in rows} == {"0", "1"}
    spans = sorted((float(r[2]), float(r[3])) for r in rows)
    assert spans[1][0] < spans[0][1]  # the first two overlapped


def finished(run: StudyRun) -> None:
    """Markers as a finished run leaves them (with the details a command step records)."""
    for step in run.chain.steps:
        run.runner.record(step.name, step.digest, 1.0, {"own": step.own_digest,
                                                         "after": {d: run.chain.by_name[d].digest for d in step.after}})


def test_cross_eval_keeps_the_predictions_of_arms_that_did_not_change(study, tmp_path):
    work = tmp_path / "work"
    finished(StudyRun(study(), work, "cpu", ["nnunet-synth"], "R"))
    retrained = StudyRun(study(arm_extra="synthetic_only = true"), work, "cpu", ["nnunet-synth"], "R")
    cross_eval = retrained.chain.by_name["cross-eval-f0-r0"]
    assert retrained.runner.changed(cross_eval.name, cross_eval.digest)
    assert retrained.stale(cross_eval) == [str(work / "cross_eval" / "f0_r0" / "predictions" / "expanded")]
    # another evaluation setting: cross-eval's own command changed, nothing of the old output is kept
    other = StudyRun(study(study_extra="", tests="[evaluation]\nbootstrap = 500"), work, "cpu", ["nnunet-synth"], "R")
    step = other.chain.by_name["cross-eval-f0-r0"]
    assert other.stale(step) == [str(work / "cross_eval" / "f0_r0")]
    assert not other.runner.changed("train-baseline-f0-r0", other.chain.by_name["train-baseline-f0-r0"].digest)


def test_generate_options_reach_the_command(study, tmp_path):
    path = config(tmp_path)
    path.write_text(path.read_text().replace('k = 1 }', 'k = 2, seed = 7, strength = 0.5, sampling = "full" }'))
    run = StudyRun(load_config(path), tmp_path / "work", "cpu", ["nnunet-synth"], "R")
    command = run.chain.by_name["generate-ddpm-f0"].command
    words = " ".join(command)
    assert "--mode twins -k 2 --seed 7" in words and "--strength 0.5 --sampling full" in words
    assert command[command.index("--cases") + 1:] == sorted(run.chain.folds[0]["train"])


INSPECTED = dict(generator_extra='inspect = { filter = "0.5:0.95", disable_tta = true }',
                 study_extra="repeats = 2",
                 tests='[budget]\nepochs = 1\nfinal_validation = false\nseed = 5\naugmentation_processes = 0\n\n'
                       '[arms.unfiltered]\nuse = "expansion"\ngenerator = "ddpm"\nfiltered = false')


def test_inspected_generator_waits_for_the_repeat0_baseline(study, tmp_path):
    chain = StudyRun(study(**INSPECTED), tmp_path / "work", "cpu", ["nnunet-synth", "study", "x"], "R").chain
    names = [s.name for s in chain.steps]
    assert names.index("train-baseline-f0-r0") < names.index("inspect-ddpm-f0") < names.index("expand-expanded-f0")
    assert names.count("train-baseline-f0-r0") == 1
    inspect = chain.by_name["inspect-ddpm-f0"]
    assert inspect.after == ["generate-ddpm-f0", "train-baseline-f0-r0"]
    words = inspect.command
    assert words[:3] == ["nnunet-synth", "inspect", "952"] and words[words.index("--filter") + 1] == "0.5:0.95"
    assert words[words.index("--baseline") + 1] == (
        f"{tmp_path / 'work'}/results/r0/Dataset951_Tiny/nnUNetTrainerShort__nnUNetPlans__2d")
    assert "--disable-tta" in words and inspect.on_change == ["--overwrite"]
    for arm in ("expanded", "unfiltered"):
        expand = chain.by_name[f"expand-{arm}-f0"]
        assert expand.after == ["plan", "inspect-ddpm-f0"]
        assert ("--include-filtered" in expand.command) == (arm == "unfiltered")
    # nnU-Net's own validation only where something reads it: the baseline that inspect uses
    validation = {s.name: s.env.get("nnUNetSynth_final_validation") for s in chain.steps if s.training}
    assert validation == {"train-baseline-f0-r0": None, "train-expanded-f0-r0": "0", "train-unfiltered-f0-r0": "0",
                          "train-baseline-f0-r1": "0", "train-expanded-f0-r1": "0", "train-unfiltered-f0-r1": "0"}
    # repeat R trains with seed 5 + R; augmentation in the training process (trainings only, not planning)
    seeds = {s.name: (s.env.get("nnUNetSynth_seed"), s.env.get("nnUNet_n_proc_DA")) for s in chain.steps if s.training}
    assert set(seeds.values()) == {("5", "0"), ("6", "0")} and seeds["train-baseline-f0-r1"] == ("6", "0")
    assert "nnUNet_n_proc_DA" not in chain.by_name["plan"].env
    # the inspection writes into the synthetic dataset: that is not a dataset of its own
    assert chain.written_datasets() == {952: "TinyDdpmF0", 953: "TinyExpandedF0", 954: "TinyUnfilteredF0"}
    assert chain.foreign_datasets() == []


@pytest.mark.parametrize("parts, problem", [
    (dict(arm_extra="filtered = false"), "generator 'ddpm' has no inspect filter"),
    (dict(generator_extra='inspect = { filter = "0.7:0.2" }'), "LOW is greater than HIGH"),
    (dict(generator_extra='inspect = { filtr = "0.5" }'), "unknown key 'filtr' in [generators.ddpm].inspect"),
    (dict(generator_extra='inspect = { filter = "0.5" }',
          tests='[arms.boost]\nuse = "diffboost"\ngenerator = "ddpm"\nfiltered = false'),
     "[arms.boost].filtered = false: for expansion arms of an inspected generator only"),
])
def test_inspect_and_filtered_settings_are_checked(study, parts, problem):
    from nnunet_synth.study.config import StudyConfigError

    with pytest.raises(StudyConfigError) as e:
        study(**parts)
    assert len(e.value.problems) == 1 and problem in e.value.problems[0]
