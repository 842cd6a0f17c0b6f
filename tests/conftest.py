import os

# Two xdist workers on 2 cores each run torch (nnU-Net sets as many threads as cores): with OpenMP's default
# active waiting, each process's idle threads spin on the core the other one needs. Passive waiting, set
# here before any test imports torch and inherited by every command a test runs: two tiny trainings at
# once took 49 s instead of 251 s (benchmarks/bench_omp_wait_policy.py). The suite's trainings are mostly
# start-up, so its own time barely changes; this keeps two long computations from stalling each other.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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


def nnunet_command(monkeypatch, name: str, *args: str, env: dict | None = None) -> None:
    """The console script ``name`` (e.g. nnUNetv2_predict) run in this process: the function its entry point
    names, with ``sys.argv`` as the command line would set it. nnU-Net reads its folder variables when it uses
    them: ``env`` is set first, through ``monkeypatch`` (so for the rest of the test). Saves a command's
    start-up (importing torch and nnU-Net).
    """
    from importlib.metadata import entry_points

    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    (entry,) = entry_points(group="console_scripts", name=name)
    monkeypatch.setattr(sys, "argv", [name, *args])
    try:
        entry.load()()
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise AssertionError(f"{name} {' '.join(args)} exited {stop.code}") from stop


def kill_once(command: list[str], env: dict | None, ready, what: str, timeout: float = 300) -> int:
    """Start ``command`` and SIGKILL it (no cleanup runs) as soon as ``ready()`` holds; returns its exit status.

    Fails, with the end of the command's output, if it ends or makes no progress before ``ready()``.
    """
    with tempfile.TemporaryFile("w+") as output:
        proc = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        try:
            while not ready():
                if proc.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    problem = (f"ended (exit {proc.returncode}) before it could be killed" if proc.returncode is not None
                               else f"made no progress in {timeout:.0f} s")
                    pytest.fail(f"{what} {problem}:\n{output.read()[-4000:]}")
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    return proc.returncode


def built_once(tmp_path_factory, name: str, build):
    """``build(folder)`` run once per test session, even with several xdist workers; returns the folder.

    Workers share the folder through a file lock in the session's common temporary root: the
    first to arrive builds it, the others wait and read it. Tests must not change it.
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this session
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_file():
            if folder.exists():
                shutil.rmtree(folder)  # a build that failed in another worker
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def _plan_tiny_2d(folder):
    from nnunet_synth.testing import make_raw_dataset_2d

    folders = make_nnunet_folders(folder)
    make_raw_dataset_2d(folders.raw, 901, n_cases=10)
    run_command([venv_command("nnUNetv2_plan_and_preprocess"), "-d", "901", "-c", "2d", "-np", "1", "-npfp", "1",
                 "--verify_dataset_integrity"], folders.env())


@pytest.fixture(scope="session")
def planned_tiny_2d(tmp_path_factory):
    """nnU-Net folders with Dataset901_Tiny2D (10 PNG cases, 64x64) planned and preprocessed for 2d, once per session.

    Tests must not change these folders: copy them with ``use_planned(planned_tiny_2d, nnunet_folders)``.
    """
    return make_nnunet_folders(built_once(tmp_path_factory, "planned_tiny_2d", _plan_tiny_2d))


@dataclass
class DemoRun:
    workdir: Path
    first: str           # stdout of `nnunet-synth demo --budget 1`
    again: str           # stdout of the same command rerun

    def folders(self):
        """The demo's nnU-Net folders; results: repeat 0's root (WORK/results/r0), where the study trained."""
        from nnunet_synth.testing import NnunetFolders

        return NnunetFolders(self.workdir / "nnUNet_raw", self.workdir / "nnUNet_preprocessed",
                             self.workdir / "results" / "r0")


def _run_demo(folder):
    workdir = folder / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("nnUNet_", "nnUNetSynth_"))}
    # One export process and one augmentation worker per training: the suite shares 2 cores between two tests.
    env.update(nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1")
    command = [venv_command("nnunet-synth"), "demo", "-w", str(workdir), "--budget", "1", "--device", "cpu"]
    (folder / "first.txt").write_text(run_command(command, env, timeout=1800).stdout)
    # a rerun skips every step (test_demo_e2e checks it); run here, before any test reads the folder
    (folder / "again.txt").write_text(run_command(command, env, timeout=600).stdout)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The demo with a tiny budget, run (and rerun) once per session; tests read its work folder, never change it.

    It is the one 2D chain of the suite, the built-in study `demo` (phantom, plan, fit, generate, the baseline,
    inspect, twins, expand, baseline / DiffBoost / expansion trainings, cross-eval, report; at --budget 1 one repeat):
    test_demo_e2e checks the chain, and other tests reuse its trained models instead of training their own.
    Tests that use it run on one xdist worker (see pytest_collection_modifyitems).
    """
    folder = built_once(tmp_path_factory, "demo_run", _run_demo)
    return DemoRun(folder / "demo", (folder / "first.txt").read_text(), (folder / "again.txt").read_text())


def copy_results(source: Path, target: Path) -> Path:
    """A writable copy of an nnU-Net results folder whose checkpoints are links to the originals (read only)."""
    for path in sorted(source.rglob("*")):
        out = target / path.relative_to(source)
        if path.is_dir():
            out.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".pth":
            out.symlink_to(path)
        else:
            shutil.copy2(path, out)
    return target


def use_planned(planned, folders):
    """Copy a planned session dataset into a test's own (empty) nnU-Net folders; returns the raw dataset folder."""
    for src, dst in ((planned.raw, folders.raw), (planned.preprocessed, folders.preprocessed)):
        shutil.copytree(src, dst, dirs_exist_ok=True)
    return next(folders.raw.glob("Dataset*"))


@pytest.fixture
def hub_offline(monkeypatch):
    """Hugging Face libraries told to stay offline (the SD and DINOv2 tests load local folders only)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def error_lines(capsys) -> list[str]:
    """The lines of captured stderr that are error messages (progress bars aside)."""
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


@pytest.fixture(autouse=True)
def integrity_check_in_threads(monkeypatch):
    """nnU-Net's verify_dataset_integrity, called in a test's process, runs its checks in threads of that process.

    The checks are nnU-Net's, unchanged; only its spawned process pool (seconds
    of start-up per call, each worker importing torch and nnU-Net, on datasets of
    a few cases) is replaced by multiprocessing.dummy. Subprocesses (nnU-Net's own
    commands) are not affected.
    """
    import multiprocessing.dummy
    import types

    import nnunetv2.experiment_planning.verify_dataset_integrity as vdi

    monkeypatch.setattr(vdi, "multiprocessing", types.SimpleNamespace(get_context=lambda method=None: multiprocessing.dummy))


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


# The longest tests, longest first (seconds on 2 idle cores). ``make test`` runs the suite on two
# xdist workers with --dist loadgroup, which hands out tests in this order as workers free up:
# starting the longest ones first lets both workers finish at about the same time.
LONGEST_FIRST = ("test_demo_e2e.py", "test_meddiff_ft.py", "test_reliability.py",
                 "test_diffboost_e2e.py", "test_expand_e2e.py", "test_eval_cross_e2e.py", "test_quality_inspect.py",
                 "test_diffboost_3d.py", "test_resume_write.py", "test_discovery_and_doctor.py", "test_sd_inpaint.py",
                 "test_controlnet.py")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
    """The longest test files first (in LONGEST_FIRST's order), then the rest in collection order.

    Tests that use the session's demo run share one xdist worker (group "demo"), so the demo runs once.
    """
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    for item in items:
        if "demo_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("demo"))
