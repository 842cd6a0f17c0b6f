"""Why the test suite sets OMP_WAIT_POLICY=PASSIVE (tests/conftest.py): two nnU-Net trainings side by side on a CPU.

``make test`` runs two pytest-xdist workers on a 2-core machine, and each worker's commands run torch with
as many OpenMP threads as there are cores (nnU-Net's ``nnUNetv2_train`` sets that on a CPU). With OpenMP's
default active waiting, a process's idle threads spin on cores that the other process needs. This
benchmark times, in one run, on a tiny planned 2D dataset:

- one training alone and two trainings at once, with OpenMP's default wait policy;
- the same with ``OMP_WAIT_POLICY=PASSIVE``.

Each training is ``nnUNetv2_train DATASET 2d 0 -tr nnUNetTrainerShort`` for ``--epochs`` x ``--iterations``
(``nnUNetSynth_epochs`` / ``nnUNetSynth_iterations_per_epoch``), augmentation in the training process,
no final validation. The figures are wall seconds of the whole command, start-up included.

    .venv/bin/python benchmarks/bench_omp_wait_policy.py [--epochs 2] [--iterations 40] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_results import write_result

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def prepare(workdir: Path) -> dict:
    """A planned Dataset901_Tiny2D (10 cases, 64x64) in ``workdir``; returns nnU-Net's folder variables."""
    from nnunet_synth.testing import make_nnunet_folders, make_raw_dataset_2d

    folders = make_nnunet_folders(workdir)
    env = folders.env()
    if not (folders.preprocessed / "Dataset901_Tiny2D" / "nnUNetPlans.json").is_file():
        make_raw_dataset_2d(folders.raw, 901, n_cases=10)
        subprocess.run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", "901", "-c", "2d", "-np", "1",
                        "-npfp", "1"], check=True, capture_output=True, env={**os.environ, **env})
    return env


def trainings(workdir: Path, env: dict, n: int, policy: str | None, epochs: int, iterations: int) -> float:
    """Wall seconds of ``n`` trainings started together (each into its own results folder)."""
    from nnunet_synth.environment import trainer_folder

    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    base.update(env, nnUNet_extTrainer=trainer_folder(), nnUNet_def_n_proc="1", nnUNet_n_proc_DA="0",
                nnUNetSynth_epochs=str(epochs), nnUNetSynth_iterations_per_epoch=str(iterations),
                nnUNetSynth_final_validation="0", nnUNetSynth_seed="0")
    if policy is not None:
        base["OMP_WAIT_POLICY"] = policy
    start = time.perf_counter()
    procs = []
    for i in range(n):
        results = workdir / f"results_{policy or 'default'}_{n}_{i}"
        procs.append(subprocess.Popen([str(BIN / "nnUNetv2_train"), "901", "2d", "0", "-tr", "nnUNetTrainerShort",
                                       "-device", "cpu"], env={**base, "nnUNet_results": str(results)},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"nnUNetv2_train exited {proc.returncode}:\n{err[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=40, help="training iterations per epoch")
    parser.add_argument("--workdir", type=Path, help="keep the planned dataset here (default: a temporary folder)")
    parser.add_argument("-o", "--output", type=Path, default=HERE / "results" / "omp_wait_policy.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = (args.workdir or Path(scratch)).resolve()
        env = prepare(workdir)
        seconds = {}
        for policy in (None, "PASSIVE"):
            for n in (1, 2):
                key = f"{'default' if policy is None else 'passive'}_{n}_at_once_s"
                seconds[key] = round(trainings(workdir, env, n, policy, args.epochs, args.iterations), 1)
                print(f"{key}: {seconds[key]}", flush=True)
    write_result({"what": "wall seconds of nnUNetv2_train (tiny 2D dataset, CPU), alone and two at once",
                  "cpu_count": os.cpu_count(), "epochs": args.epochs, "iterations_per_epoch": args.iterations,
                  **seconds,
                  "two_at_once_default_over_passive": round(seconds["default_2_at_once_s"]
                                                            / seconds["passive_2_at_once_s"], 2),
                  "alone_passive_over_default": round(seconds["passive_1_at_once_s"]
                                                      / seconds["default_1_at_once_s"], 2)}, args.output)


if __name__ == "__main__":
    main()
