"""Real `generate` processes: a killed run resumed, and a 2-process accelerate run, each
compared file by file with one uninterrupted single-process run."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import accelerate_generate, run_command, venv_command
from test_generators_blur import BlurTestGenerator, blur_env

from nnunet_synth.commands.main import main as cli_main
from nnunet_synth.generators import registry
from nnunet_synth.testing import make_nnunet_folders, make_raw_dataset_2d

SYNTH = "Dataset902_Tiny2DSynthNew"


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A real 2D dataset, a fitted test model, and the reference output of an uninterrupted run."""
    root = tmp_path_factory.mktemp("generate_runs")
    real_folders = make_nnunet_folders(root / "real")
    real = make_raw_dataset_2d(real_folders.raw, 901, n_cases=5, shape=(24, 20))
    model = root / "model"
    reference = make_nnunet_folders(root / "reference")
    registry.register("test-blur", BlurTestGenerator)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in real_folders.env().items():
                mp.setenv(key, value)
            assert cli_main(["fit", "test-blur", "-d", "901", "--fold", "0", "-o", str(model)]) == 0
            mp.setenv("nnUNet_raw", str(reference.raw))
            assert cli_main(["generate", "test-blur", *arguments(real, model)]) == 0
    finally:
        registry.unregister("test-blur")
    return real, model, files_of(reference.raw / SYNTH)


def arguments(real: Path, model: Path) -> list[str]:
    # The real dataset is given as a folder, so each run can write into its own nnUNet_raw.
    return ["-m", str(model), "-d", str(real), "-o", "902", "--mode", "new", "-k", "2", "--sleep-per-case", "0.3",
            "--device", "cpu"]


def env_for(tmp_path: Path) -> tuple[dict, Path]:
    folders = make_nnunet_folders(tmp_path)
    env = blur_env(folders.env())
    env["CUDA_VISIBLE_DEVICES"] = ""  # the same CPU processes on machines with GPUs
    return env, folders.raw / SYNTH


def test_killed_run_resumes_to_identical_files(setup, tmp_path):
    real, model, reference = setup
    env, out = env_for(tmp_path)
    command = [venv_command("nnunet-synth"), "generate", "test-blur", *arguments(real, model)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # Kill once a few of the 10 cases are done, without warning (SIGKILL: no cleanup runs).
    while len(list((out / ".synthesis_parts").glob("*_new*.json"))) < 3:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "the run made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "synthesis.json").exists() and (out / ".synthesis_parts").is_dir()
    finished = {p: p.stat().st_mtime_ns for p in (out / "imagesTr").glob("*.png")
                if (out / ".synthesis_parts" / (p.name[: -len("_0000.png")] + ".json")).is_file()}
    assert len(finished) >= 3
    run_command(command, env=env)
    assert files_of(out) == reference
    # the cases finished before the kill were skipped, not written again
    assert {p: p.stat().st_mtime_ns for p in finished} == finished


def test_two_accelerate_processes_write_the_same_files(setup, tmp_path):
    real, model, reference = setup
    env, out = env_for(tmp_path)
    accelerate_generate(["test-blur", *arguments(real, model)], env)
    assert files_of(out) == reference
