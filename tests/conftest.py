import os
import shutil
import subprocess
import sys

import pytest

from nnunet_synth.testing import make_nnunet_folders


@pytest.fixture
def nnunet_folders(tmp_path, monkeypatch):
    """Fresh nnU-Net raw/preprocessed/results folders, exported for this test only."""
    folders = make_nnunet_folders(tmp_path / "nnunet")
    for key, value in folders.env().items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    return folders


def venv_command(name: str) -> str:
    """A console script of the running interpreter's environment (e.g. nnUNetv2_train)."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    found = candidate if os.path.exists(candidate) else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found next to {sys.executable} or on PATH")
    return found


def run_command(args: list[str], env: dict, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; on failure show its output in the test report."""
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-6000:]}\nSTDERR:\n{proc.stderr[-6000:]}")
    return proc
