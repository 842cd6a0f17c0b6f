"""Resumable chains of commands: the demo, the studies (nnunet_synth/study) and the seed-study recipes.

Each step is one subprocess. Its command is printed before it runs; when it
exits 0, a marker file ``<state>/<step>.done`` records it as complete: a JSON
object with its duration (``seconds``) and a hash of what defines it
(``hash``: by default its command; a chain may hash the step's settings and
its dependencies' hashes too, see ``step_hash``). A rerun skips a step whose
marker holds the same hash, reruns a step whose command or settings changed,
and an interrupted chain resumes at the step that did not finish. A failing
step stops the chain with one line naming the step and how to resume.
"""
from __future__ import annotations

import hashlib
import json
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


def step_hash(*parts) -> str:
    """SHA-256 of JSON-serialisable parts (a command, settings, the hashes of the steps it depends on)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class StepRunner:
    def __init__(self, state: Path, rerun_hint: str):
        """``state``: folder of the step markers; ``rerun_hint``: the command that resumes the chain."""
        self.state, self.rerun_hint = Path(state), rerun_hint

    def marker(self, name: str) -> Path:
        return self.state / f"{name}.done"

    def recorded(self, name: str) -> dict | None:
        """The marker's content ({'seconds', 'hash'}), None without a marker.

        A marker of an older version holds only the duration: it has no hash, so
        any expected hash differs from it and the step reruns.
        """
        marker = self.marker(name)
        if not marker.exists():
            return None
        text = marker.read_text()
        try:
            content = json.loads(text)
        except ValueError:
            content = None
        if isinstance(content, dict):
            return content
        try:
            return {"seconds": float(text), "hash": None}
        except ValueError:
            return {"seconds": None, "hash": None}

    def done(self, name: str, digest: str | None = None) -> bool:
        """True if the step finished; with ``digest``, only if it finished with that hash."""
        recorded = self.recorded(name)
        return recorded is not None and (digest is None or recorded.get("hash") == digest)

    def changed(self, name: str, digest: str) -> bool:
        """True if the step finished before with another hash (its outputs are stale)."""
        recorded = self.recorded(name)
        return recorded is not None and recorded.get("hash") != digest

    def run(self, number: int, total: int, name: str, command: list[str], env: dict,
            digest: str | None = None, details: dict | None = None) -> bool:
        """Run one step unless its marker holds ``digest`` (default: the command's hash); True if it ran.

        ``details`` (JSON) are kept in the marker, for a later run to see what the step was made from.
        """
        digest = digest if digest is not None else step_hash(command)
        if self.done(name, digest):
            print(f"[{number}/{total}] {name}: done before, skipped", flush=True)
            return False
        why = " (changed since its last run)" if self.changed(name, digest) else ""
        print(f"\n[{number}/{total}] {name}{why}: {' '.join(command)}", flush=True)
        start = time.time()
        # the old marker goes first: a step killed midway must not look finished with its old settings
        self.marker(name).unlink(missing_ok=True)
        proc = subprocess.run(command, env=env)
        if proc.returncode != 0:
            raise SynthError(f"step '{name}' failed (exit {proc.returncode}); fix the cause and rerun "
                             f"{self.rerun_hint} to resume from this step")
        self.record(name, digest, time.time() - start, details)
        print(f"[{number}/{total}] {name}: finished in {time.time() - start:.0f} s", flush=True)
        return True

    def record(self, name: str, digest: str, seconds: float, details: dict | None = None) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        content = {"seconds": round(seconds, 1), "hash": digest}
        if details:
            content["details"] = details
        write_json_atomic(self.marker(name), content)


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
