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


@pytest.fixture(scope="session")
def planned_tiny_2d(tmp_path_factory):
    """nnU-Net folders with Dataset901_Tiny2D (10 PNG cases, 64x64) planned and preprocessed for 2d, once per session.

    Tests must not change these folders: copy them with ``use_planned(planned_tiny_2d, nnunet_folders)``.
    """
    from nnunet_synth.testing import make_raw_dataset_2d

    folders = make_nnunet_folders(tmp_path_factory.mktemp("planned_tiny_2d"))
    make_raw_dataset_2d(folders.raw, 901, n_cases=10)
    run_command([venv_command("nnUNetv2_plan_and_preprocess"), "-d", "901", "-c", "2d", "-np", "1", "-npfp", "1",
                 "--verify_dataset_integrity"], folders.env())
    return folders


def use_planned(planned, folders):
    """Copy a planned session dataset into a test's own (empty) nnU-Net folders; returns the raw dataset folder."""
    for src, dst in ((planned.raw, folders.raw), (planned.preprocessed, folders.preprocessed)):
        shutil.copytree(src, dst, dirs_exist_ok=True)
    return next(folders.raw.glob("Dataset*"))


@pytest.fixture
def one_torch_thread():
    """One torch thread: reductions split over threads may add in another order, and the 2 cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def accelerate_generate(arguments: list[str], env: dict) -> subprocess.CompletedProcess:
    """``nnunet-synth generate ARGUMENTS`` sharded over 2 processes by accelerate (on CPU: torchrun, --multi_gpu).

    Each process runs on the CPU when ``--device cpu`` is given and no GPU is visible.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_command([venv_command("accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        "--main_process_port", str(port), "-m", "nnunet_synth.commands.generate", *arguments], env=env)
    assert "[process 1]" in proc.stderr and "[process 0]" in proc.stderr
    return proc
