"""`nnunet-synth generate patch-ddpm`, killed mid-way and rerun, or sharded over two
accelerate processes, writes the same files as one uninterrupted run.

Each model is fitted once (tiny settings) and the uninterrupted reference run is made
once, in process; the runs under test are real `generate` commands (subprocesses). The
output is deterministic for a seed only with one torch thread, so every process here
runs with one. Most of the file's time (about 100 s on 2 cores) is the start of each
`generate` process (~10 s of imports) and verify_dataset_integrity (~4 s).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import accelerate_generate, kill_once, run_command, venv_command
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

from nnunet_synth.commands.main import main as cli_main
from nnunet_synth.testing import make_nnunet_folders, make_raw_dataset_2d, make_raw_dataset_3d

FIT = ["--channels", "8", "16", "--res-blocks", "1", "--batch-size", "2", "--train-steps", "3",
       "--checkpoint-every", "2", "--ema-decay", "0", "--cpu"]
# name -> (maker, real id, image shape, patch size, generate options). 5 source cases x k=2 = 10 cases;
# the steps make one case take about 0.2 s (idle machine), long enough to land a kill between cases.
DATASETS = {
    "png": (make_raw_dataset_2d, 901, (24, 20), "8", ["--mode", "twins", "--steps", "40", "--sampling", "full"]),
    "nifti": (make_raw_dataset_3d, 911, (8, 16, 12), "4", ["--mode", "new", "--steps", "10", "--sampling", "full"]),
}
N_CASES = 10
KILL_AFTER = 2  # finished cases
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_files(folder: Path, reference: dict[str, bytes]) -> None:
    files = files_of(folder)
    differ = sorted(name for name in files.keys() | reference.keys() if files.get(name) != reference.get(name))
    assert not differ, f"{len(differ)} file(s) differ from the uninterrupted run's (or exist in one only): {differ}"


def generate_arguments(real: Path, model: Path, options: list[str]) -> list[str]:
    # The real dataset is given as a folder, so each run can write into its own nnUNet_raw.
    return ["patch-ddpm", "-m", str(model), "-d", str(real), "-o", "950", "-k", "2", "--seed", "3", *options,
            "--device", "cpu"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """name -> (generate arguments, reference files, reference folder name), fitted and generated once."""
    import torch

    root = tmp_path_factory.mktemp("resume_write")
    real_folders = make_nnunet_folders(root / "real")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in real_folders.env().items():
                mp.setenv(key, value)  # nnUNet_raw changes: fit reads the real one, generate writes the reference
            for name, (maker, real_id, shape, patch, options) in DATASETS.items():
                mp.setenv("nnUNet_raw", str(real_folders.raw))
                real = maker(real_folders.raw, real_id, n_cases=5, shape=shape)
                model = root / f"model_{name}"
                assert cli_main(["fit", "patch-ddpm", "-d", str(real_id), "--fold", "0", "-o", str(model),
                                 "--patch-size", patch, *FIT]) == 0
                reference = make_nnunet_folders(root / f"reference_{name}")
                mp.setenv("nnUNet_raw", str(reference.raw))
                args = generate_arguments(real, model, options)
                assert cli_main(["generate", *args]) == 0
                (folder,) = reference.raw.iterdir()
                files = files_of(folder)
                assert len([f for f in files if f.startswith("imagesTr")]) == N_CASES
                out[name] = args, files, folder.name
    finally:
        torch.set_num_threads(threads)
    return out


def env_for(tmp_path: Path) -> tuple[dict, Path]:
    folders = make_nnunet_folders(tmp_path / "nnunet")
    env = {**os.environ, **folders.env(), **ONE_THREAD,
           "CUDA_VISIBLE_DEVICES": ""}  # the same CPU processes on machines with GPUs
    return env, folders.raw


def case_records(out: Path) -> list[Path]:
    return [p for p in (out / ".synthesis_parts").glob("*.json") if p.name != "parameters.json"]


# The kill is tested on the 3D NIfTI run of --mode new (mask variation, the NIfTI writer); the 2D PNG twins
# run is sharded below. Resume itself is the same code for every format and mode.
@pytest.mark.parametrize("name", ["nifti"])
def test_killed_generate_resumes_to_identical_files(fitted, tmp_path, name):
    args, reference, folder_name = fitted[name]
    env, raw = env_for(tmp_path)
    out = raw / folder_name
    command = [venv_command("nnunet-synth"), "generate", *args]
    # Kill once a few cases are done, without warning (SIGKILL: no cleanup runs).
    kill_once(command, env, lambda: len(case_records(out)) >= KILL_AFTER, "the run")
    done = {p.stem for p in case_records(out)}
    assert KILL_AFTER <= len(done) < N_CASES, f"the kill did not land mid-way: {len(done)} of {N_CASES} cases done"
    assert not (out / "synthesis.json").exists(), "the manifest is written last"
    finished = {p: p.stat().st_mtime_ns for sub in ("imagesTr", "labelsTr") for p in (out / sub).iterdir()
                if any(p.name.startswith(case + ("_" if sub == "imagesTr" else ".")) for case in done)}
    assert len(finished) == 2 * len(done)  # one image channel and one label per finished case

    run_command(command, env=env)
    assert_same_files(out, reference)
    assert not list(out.rglob(".tmp-*")) and not (out / ".synthesis_parts").exists()
    # the cases finished before the kill were skipped, not written again
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    verify_dataset_integrity(str(out), num_processes=1)


def test_two_accelerate_processes_write_the_same_files(fitted, tmp_path):
    args, reference, folder_name = fitted["png"]
    env, raw = env_for(tmp_path)
    accelerate_generate([*args], env)
    out = raw / folder_name
    assert_same_files(out, reference)
    assert not list(out.rglob(".tmp-*"))
