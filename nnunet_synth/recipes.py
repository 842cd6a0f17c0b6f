"""Resumable chains of commands: the demo and the seed-study recipes in dataset_conversion/.

Each step is one subprocess. Its command is printed before it runs; when it
exits 0, a marker file ``<state>/<step>.done`` (holding its duration) records
it as complete, so a rerun skips it and an interrupted chain resumes at the
step that did not finish. A failing step stops the chain with one line naming
the step and how to resume.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from nnunet_synth.atomic import read_json, same_json, write_json_atomic
from nnunet_synth.errors import SynthError


def console_script(name: str) -> str:
    """A console script of the running interpreter's environment, else the bare name (found on PATH)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


class StepRunner:
    def __init__(self, state: Path, rerun_hint: str):
        """``state``: folder of the step markers; ``rerun_hint``: the command that resumes the chain."""
        self.state, self.rerun_hint = Path(state), rerun_hint

    def done(self, name: str) -> bool:
        return (self.state / f"{name}.done").exists()

    def run(self, number: int, total: int, name: str, command: list[str], env: dict) -> bool:
        """Run one step unless its marker exists; returns True if it ran."""
        marker = self.state / f"{name}.done"
        if marker.exists():
            print(f"[{number}/{total}] {name}: done before, skipped")
            return False
        print(f"\n[{number}/{total}] {name}: {' '.join(command)}", flush=True)
        start = time.time()
        proc = subprocess.run(command, env=env)
        if proc.returncode != 0:
            raise SynthError(f"step '{name}' failed (exit {proc.returncode}); fix the cause and rerun "
                             f"{self.rerun_hint} to resume from this step")
        self.state.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{time.time() - start:.1f}\n")
        print(f"[{number}/{total}] {name}: finished in {time.time() - start:.0f} s", flush=True)
        return True


def check_workdir_settings(path: Path, settings: dict, describe=None) -> None:
    """A work folder belongs to one set of settings: record them on first use, refuse others later.

    A rerun with other settings would mix the steps of two runs. The refusal
    names the settings that changed, or what ``describe(previous)`` says.
    """
    path = Path(path)
    if not path.exists():
        write_json_atomic(path, settings)  # an interrupted write leaves no half file
        return
    previous = read_json(path, "delete the work folder or use a new --workdir")
    changed = sorted(k for k in set(previous) | set(settings) if not same_json(previous.get(k), settings.get(k)))
    if changed:
        what = describe(previous) if describe is not None else ", ".join(changed)
        raise SynthError(f"{path}: this work folder was made with other settings ({what}); "
                         f"use a new --workdir or the same settings")
