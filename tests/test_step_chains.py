"""Resumable step chains (issue 17): StepRunner and the demo resume after an interrupted step and refuse a
work folder made with other settings. Steps are replaced by tiny Python subprocesses, so no nnU-Net command
runs; the whole chains run in tests/test_demo_e2e.py and tests/test_study_e2e.py (the lung recipe is the
built-in lung study, tests/test_study_dry_run.py)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
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

SUMMARY = {"models": [], "results": {}, "comparisons": []}


def no_demo_run(monkeypatch):
    def fail(self):
        raise AssertionError("Demo.run was called although the settings were refused")

    monkeypatch.setattr(demo_module.Demo, "run", fail)
    monkeypatch.setattr(demo_module.StepRunner, "run", fail)


def noop_demo_run(monkeypatch, calls: list):
    def run(self):
        calls.append((self.workdir, self.schedule, self.device))
        summary = self.workdir / "cross_eval" / "summary.json"
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(json.dumps(SUMMARY))

    monkeypatch.setattr(demo_module.Demo, "run", run)


def write_demo_settings(workdir: Path, budget: float, device: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "demo_settings.json"
    path.write_text(json.dumps({"budget_minutes": budget, "device": device,
                                "schedule": asdict(demo_module.schedule_for(budget, device == "cuda"))}))
    return path


def test_demo_same_settings_pass(tmp_path, monkeypatch):
    calls, workdir = [], tmp_path / "demo"
    noop_demo_run(monkeypatch, calls)
    assert demo_module.run_demo(workdir, budget=None, device="cpu") == SUMMARY
    settings = json.loads((workdir / "demo_settings.json").read_text())
    assert settings["budget_minutes"] == 15.0 and settings["device"] == "cpu"
    assert settings["schedule"] == json.loads(json.dumps(asdict(demo_module.schedule_for(15.0, False))))
    # the default budget on a CPU is 15: an explicit --budget 15 is the same settings
    demo_module.run_demo(workdir, budget=15.0, device="cpu")
    demo_module.run_demo(str(workdir), budget=None, device="cpu")
    assert len(calls) == 3 and all(c[0] == workdir.resolve() and c[2] == "cpu" for c in calls)
    # an integer budget (the Python API) is the same settings as the float the command line gives
    demo_module.run_demo(workdir, budget=15, device="cpu")
    assert len(calls) == 4


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
    assert not (workdir / ".demo_steps").exists()


def test_demo_refuses_changed_schedule(tmp_path, monkeypatch):
    """Same budget and device but a schedule from another version of schedule_for: refused too."""
    workdir = tmp_path / "demo"
    path = write_demo_settings(workdir, 15.0, "cpu")
    settings = json.loads(path.read_text())
    settings["schedule"]["epochs"] += 1
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


def test_demo_resumes_at_failed_step(tmp_path, monkeypatch):
    """The demo's real step names and StepRunner, cheap commands: a failing step stops run_demo, a rerun
    resumes there and the last step's summary is read."""
    workdir, steps = (tmp_path / "demo").resolve(), Steps(tmp_path / "steps")
    real_steps = demo_module.Demo.steps
    names = [name for name, _ in real_steps(demo_module.Demo(workdir, demo_module.schedule_for(15, False), "cpu"))]
    assert names[:3] == ["phantom", "plan", "fit"] and names[-1] == "cross-eval" and len(names) == 11

    def cheap_steps(self):
        summary = str(self.workdir / "cross_eval" / "summary.json")
        return [(name, (lambda name=name: steps.command(name, *((summary, json.dumps(SUMMARY))
                                                                if name == "cross-eval" else ()))))
                for name, _ in real_steps(self)]

    monkeypatch.setattr(demo_module.Demo, "steps", cheap_steps)
    steps.fail("fit")
    with pytest.raises(SynthError) as e:
        demo_module.run_demo(workdir, budget=15.0, device="cpu")
    assert "step 'fit' failed (exit 3)" in str(e.value) and f"`nnunet-synth demo -w {workdir}`" in str(e.value)
    assert steps.ran() == ["phantom", "plan", "fit"]
    assert markers(workdir / ".demo_steps") == {"phantom", "plan"}

    steps.fail(None)
    steps.reset_log()
    assert demo_module.run_demo(workdir, budget=15.0, device="cpu") == SUMMARY
    assert steps.ran() == names[2:]
    assert markers(workdir / ".demo_steps") == set(names)
    # the demo's steps see its own nnU-Net folders
    assert set(steps.ran_env().values()) == {str(workdir / "nnUNet_results")}

    steps.reset_log()
    demo_module.run_demo(workdir, budget=15.0, device="cpu")
    assert steps.ran() == []
