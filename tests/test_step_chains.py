"""Resumable step chains (issue 17): StepRunner resumes after an interrupted step; the demo (the built-in study
``demo`` in its own folders) refuses a work folder made with other settings. Steps are replaced by tiny Python
subprocesses and the demo's study by a stand-in, so no nnU-Net command runs; the whole chain runs in
tests/test_demo_e2e.py (the lung recipe is the built-in lung study, tests/test_study_dry_run.py)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nnunet_synth import demo as demo_module
from nnunet_synth.errors import SynthError
from nnunet_synth.recipes import StepRunner

# A step: appends its name to LOG; exits 3 if FAIL_FLAG exists and holds its name; optionally writes a file.
STEP_CODE = """
import os, sys
name, log, fail_flag = sys.argv[1:4]
with open(log, "a") as f:
    f.write(name + " " + os.environ.get("nnUNet_results", "") + "\\n")
if os.path.exists(fail_flag) and open(fail_flag).read().strip() == name:
    sys.exit(3)
if len(sys.argv) > 4:
    os.makedirs(os.path.dirname(sys.argv[4]), exist_ok=True)
    open(sys.argv[4], "w").write(sys.argv[5])
"""


class Steps:
    """Cheap stand-in commands that record which steps ran (in order) and can be told to fail one."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.log, self.fail_flag = folder / "ran.log", folder / "fail_step"

    def command(self, name: str, *write: str) -> list[str]:
        return [sys.executable, "-c", STEP_CODE, name, str(self.log), str(self.fail_flag), *write]

    def fail(self, name: str | None) -> None:
        if name is None:
            self.fail_flag.unlink(missing_ok=True)
        else:
            self.fail_flag.write_text(name)

    def ran(self) -> list[str]:
        return [line.split(" ", 1)[0] for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def ran_env(self) -> dict[str, str]:
        """step name -> nnUNet_results it saw (last run)."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return dict(line.split(" ", 1) for line in lines)

    def reset_log(self) -> None:
        self.log.unlink(missing_ok=True)


def markers(state: Path) -> set[str]:
    return {p.name[:-len(".done")] for p in state.glob("*.done")} if state.exists() else set()


def run_chain(runner: StepRunner, steps: Steps, names: list[str]) -> None:
    for number, name in enumerate(names, start=1):
        runner.run(number, len(names), name, steps.command(name), dict(os.environ))


# ---------------------------------------------------------------- StepRunner


def test_failed_step_stops_chain_and_rerun_resumes_there(tmp_path):
    state, steps = tmp_path / "state", Steps(tmp_path / "steps")
    runner = StepRunner(state, rerun_hint="`resume-me -w X`")
    names = ["one", "two", "three"]

    steps.fail("two")
    with pytest.raises(SynthError) as e:
        run_chain(runner, steps, names)
    message = str(e.value)
    assert "\n" not in message
    assert "step 'two' failed (exit 3)" in message and "`resume-me -w X`" in message and "resume" in message
    assert steps.ran() == ["one", "two"]  # three never started
    assert markers(state) == {"one"}
    assert runner.done("one") and not runner.done("two") and not runner.done("three")

    steps.fail(None)
    steps.reset_log()
    run_chain(runner, steps, names)
    assert steps.ran() == ["two", "three"]  # one was skipped, not run again
    assert markers(state) == {"one", "two", "three"}
    assert json.loads((state / "two.done").read_text())["seconds"] >= 0  # the marker holds the duration

    steps.reset_log()
    run_chain(runner, steps, names)
    assert steps.ran() == []  # a finished chain reruns nothing


def test_run_reports_whether_it_ran(tmp_path, capsys):
    runner, steps = StepRunner(tmp_path / "state", rerun_hint="R"), Steps(tmp_path / "steps")
    assert runner.run(1, 1, "only", steps.command("only"), dict(os.environ)) is True
    assert runner.run(1, 1, "only", steps.command("only"), dict(os.environ)) is False
    out = capsys.readouterr().out
    assert "[1/1] only: " + sys.executable in out  # the command is printed before it runs
    assert "[1/1] only: done before, skipped" in out
    assert steps.ran() == ["only"]


def test_step_killed_midway_leaves_no_marker_and_is_rerun(tmp_path):
    state, steps = tmp_path / "state", Steps(tmp_path / "steps")
    runner = StepRunner(state, rerun_hint="R")
    pid_file = tmp_path / "pid"
    sleeper = [sys.executable, "-c",
               f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"]

    def kill_when_started():
        deadline = time.time() + 20
        while time.time() < deadline:
            if pid_file.exists() and pid_file.read_text():
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                return
            time.sleep(0.02)

    runner.run(1, 2, "first", steps.command("first"), dict(os.environ))
    killer = threading.Thread(target=kill_when_started)
    killer.start()
    start = time.time()
    with pytest.raises(SynthError, match=r"step 'slow' failed \(exit -9\)"):
        runner.run(2, 2, "slow", sleeper, dict(os.environ))
    killer.join()
    assert time.time() - start < 30
    assert markers(state) == {"first"}

    # the rerun runs the killed step again (now it finishes) and skips the first
    steps.reset_log()
    run_chain(runner, steps, ["first", "slow"])
    assert steps.ran() == ["slow"]
    assert markers(state) == {"first", "slow"}


def test_interrupted_step_leaves_no_marker(tmp_path, monkeypatch):
    """Ctrl-C while a step runs (subprocess.run raises KeyboardInterrupt): no marker, the step runs next time."""
    import nnunet_synth.recipes as recipes

    state, steps = tmp_path / "state", Steps(tmp_path / "steps")
    runner = StepRunner(state, rerun_hint="R")
    real_run = subprocess.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipes.subprocess, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run(1, 1, "step", steps.command("step"), dict(os.environ))
    assert markers(state) == set()
    monkeypatch.setattr(recipes.subprocess, "run", real_run)
    assert runner.run(1, 1, "step", steps.command("step"), dict(os.environ)) is True
    assert steps.ran() == ["step"] and markers(state) == {"step"}


# ---------------------------------------------------------------- demo

POOLED = "## Fold 0 over 2 repeats: per-case means\n\n| test set | arm | Dice |\n|---|---|---|\n| A | baseline | 0.700 |"


def fake_run_study(monkeypatch, calls: list):
    """run_study replaced: records what the demo asks for and writes a report like the study's."""
    import nnunet_synth.study.run as study_run

    def run_study(path, label, workdir, device, self_command, dry_run=False, only=None, gpus=None, shown_work=None):
        calls.append({"path": Path(path), "workdir": workdir, "device": device, "command": self_command,
                      "raw": os.environ["nnUNet_raw"], "results": os.environ["nnUNet_results"]})
        (workdir / "report.md").write_text(f"# Study demo\n\n## Arms\n\n{POOLED}\n\n## Fold 0, repeat 0\n")
        return 0

    monkeypatch.setattr(study_run, "run_study", run_study)


def no_demo_run(monkeypatch):
    import nnunet_synth.study.run as study_run

    def fail(*args, **kwargs):
        raise AssertionError("the study ran although the settings were refused")

    monkeypatch.setattr(study_run, "run_study", fail)


def write_demo_settings(workdir: Path, budget: float, device: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "demo_settings.json"
    path.write_text(json.dumps({"budget_minutes": budget, "device": device,
                                "config": demo_module.demo_config(budget, device == "cuda")}))
    return path


def test_demo_runs_the_builtin_study_in_its_own_folders(tmp_path, monkeypatch, capsys):
    from nnunet_synth.study.config import builtin_path, load_config, read_toml

    calls, workdir = [], tmp_path / "demo"
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "users_raw"))
    fake_run_study(monkeypatch, calls)
    assert demo_module.run_demo(workdir, budget=None, device="cpu") == 0
    (call,) = calls
    assert call["raw"] == str(workdir.resolve() / "nnUNet_raw")
    assert call["results"] == str(workdir.resolve() / "nnUNet_results")
    assert os.environ["nnUNet_raw"] == str(tmp_path / "users_raw")  # the caller's variables are back
    assert call["command"][:2] == ["nnunet-synth", "demo"] and "--budget" in call["command"]
    # the default CPU budget is the built-in config as it is, written into the work folder
    assert call["path"] == workdir.resolve() / "demo.toml"
    assert read_toml(call["path"]) == read_toml(builtin_path("demo"))
    study = load_config(call["path"], check_data=False)
    assert study.repeats == 2 and study.phantom is not None and {a.name for a in study.arms} == {
        "baseline", "diffboost", "expansion", "expansion_unfiltered"}
    assert POOLED in capsys.readouterr().out  # the table over the repeats is printed
    settings = json.loads((workdir / "demo_settings.json").read_text())
    assert settings["budget_minutes"] == 15.0 and settings["device"] == "cpu"
    # the default budget on a CPU is 15: an explicit --budget 15 (or an integer, from Python) is the same settings
    demo_module.run_demo(workdir, budget=15.0, device="cpu")
    demo_module.run_demo(str(workdir), budget=15, device="cpu")
    assert len(calls) == 3


@pytest.mark.parametrize("budget, cuda", [(1.0, False), (5.0, False), (30.0, False), (120.0, True), (10.0, True)])
def test_demo_config_of_every_budget_is_a_valid_study(tmp_path, budget, cuda):
    import tomli_w

    from nnunet_synth.study.config import load_config

    config = demo_module.demo_config(budget, cuda)
    path = tmp_path / "demo.toml"
    path.write_text(tomli_w.dumps(config))
    study = load_config(path, check_data=False)
    filtered = cuda or budget >= demo_module.FILTER_MINUTES
    assert study.repeats == (2 if filtered else 1) and len(study.arms) == (4 if filtered else 3)
    assert (study.generators["ddpm"].inspect.band is not None) == filtered
    default = demo_module.demo_config(60.0 if cuda else 15.0, cuda)
    smaller = budget < (60.0 if cuda else 15.0)
    steps = config["generators"]["ddpm"]["fit"]["train_steps"]
    default_steps = default["generators"]["ddpm"]["fit"]["train_steps"]
    iterations = config["budget"]["epochs"] * config["budget"]["iterations"]
    default_iterations = default["budget"]["epochs"] * default["budget"]["iterations"]
    assert (steps < default_steps and iterations < default_iterations) if smaller else (
        steps > default_steps and iterations > default_iterations)


def test_demo_refuses_a_budget_that_is_not_positive():
    with pytest.raises(SynthError, match="--budget 0: give a positive number"):
        demo_module.demo_config(0.0, False)


@pytest.mark.parametrize("made_with, run_with", [((15.0, "cpu"), (30.0, "cpu")),
                                                 ((15.0, "cuda"), (15.0, "cpu")),
                                                 ((60.0, "cuda"), (None, "cpu"))])
def test_demo_refuses_other_settings(tmp_path, monkeypatch, made_with, run_with):
    workdir = tmp_path / "demo"
    settings_file = write_demo_settings(workdir, *made_with)
    before = settings_file.read_text()
    no_demo_run(monkeypatch)
    with pytest.raises(SynthError) as e:
        demo_module.run_demo(workdir, budget=run_with[0], device=run_with[1])
    message = str(e.value)
    assert "\n" not in message
    assert str(settings_file.resolve()) in message and "other settings" in message
    assert f"budget {made_with[0]}, device {made_with[1]}" in message
    assert settings_file.read_text() == before  # the refusal leaves the folder's settings alone
    assert not (workdir / "demo.toml").exists() and not (workdir / ".study_steps").exists()


def test_demo_refuses_changed_config(tmp_path, monkeypatch):
    """Same budget and device but a config from another version of the built-in demo: refused too."""
    workdir = tmp_path / "demo"
    path = write_demo_settings(workdir, 15.0, "cpu")
    settings = json.loads(path.read_text())
    settings["config"]["budget"]["epochs"] += 1
    path.write_text(json.dumps(settings))
    no_demo_run(monkeypatch)
    with pytest.raises(SynthError, match="demo_settings.json: this work folder was made with other settings"):
        demo_module.run_demo(workdir, budget=15.0, device="cpu")


def test_demo_unreadable_settings_named(tmp_path, monkeypatch):
    workdir = tmp_path / "demo"
    workdir.mkdir()
    (workdir / "demo_settings.json").write_text("{not json")
    no_demo_run(monkeypatch)
    with pytest.raises(SynthError, match=r"demo_settings\.json: not valid JSON.*new --workdir"):
        demo_module.run_demo(workdir, budget=15.0, device="cpu")
