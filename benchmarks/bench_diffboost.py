"""DiffBoost speed, as ratios against nnUNetTrainer measured in one run (same plans, same data, CPU).

- loader: batches/s of DiffBoost's training loader (real + twin + mask) over
  nnUNetTrainer's training loader (target: >= 0.9). DiffBoost's loader limits
  threads with one reused threadpoolctl controller, where nnU-Net's rescans the
  loaded libraries every batch; ``loader_ratio_with_nnunet_thread_limit``
  gives the ratio with nnU-Net's per-batch call, i.e. the cost of the twins alone;
- input mix: time of one training iteration over nnUNetTrainer's (target: <= 1.05);
- output mix: time of one training iteration over nnUNetTrainer's with twice the
  batch size (target: <= 1.05), i.e. mixing itself must be nearly free.

Both sides are measured alternately, batch by batch, on one torch thread, and
summarised by the median of the process CPU time (wall time is reported too):
on a shared machine, CPU time is what other processes' load disturbs least.

    .venv/bin/python benchmarks/bench_diffboost.py [--shape 128 128] [--n 30] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_results import write_result

HERE = Path(__file__).resolve().parent
TARGETS = {"loader_batches_per_s_ratio": (">=", 0.9), "input_mix_iteration_ratio": ("<=", 1.05),
           "output_mix_iteration_ratio_vs_double_batch": ("<=", 1.05)}


def prepare(workdir: Path, shape: tuple[int, ...], n_cases: int) -> None:
    from nnunet_synth.diffboost.twins import preprocess_twins
    from nnunet_synth.manifest import TWINS_FOLDER
    from nnunet_synth.testing import make_nnunet_folders, make_raw_dataset_2d, make_standin_synthetic_dataset

    folders = make_nnunet_folders(workdir)
    os.environ.update({k: v for k, v in folders.env().items()})
    if (folders.preprocessed / "Dataset901_Tiny2D" / "nnUNetPlans_2d" / TWINS_FOLDER).is_dir():
        return
    real = make_raw_dataset_2d(folders.raw, 901, n_cases=n_cases, shape=shape)
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "nnUNetv2_plan_and_preprocess"), "-d", "901",
                    "-c", "2d", "-np", "1", "-npfp", "1"], check=True, capture_output=True, env=folders.env())
    make_standin_synthetic_dataset(real, folders.raw, 902, k=2)
    preprocess_twins("901", "902", "2d", progress=False)


def make_trainer(cls, workdir: Path):
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json

    base = workdir / "nnUNet_preprocessed" / "Dataset901_Tiny2D"
    plans = load_json(str(base / "nnUNetPlans.json"))
    plans["continue_training"] = False
    trainer = cls(plans, "2d", 0, load_json(str(base / "dataset.json")), torch.device("cpu"))
    trainer.initialize()
    trainer.dataloader_train, _ = trainer.get_dataloaders()
    return trainer


def timed(fn) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def alternate(a, b, n: int) -> dict[str, tuple[float, float]]:
    """Median CPU and wall seconds of a() and b(), called alternately n times each after one warm-up call."""
    a(), b()
    ta, tb = [], []
    for _ in range(n):
        ta.append(timed(a))
        tb.append(timed(b))
    median = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
    return {"cpu": (median(ta, 0), median(tb, 0)), "wall": (median(ta, 1), median(tb, 1))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=2, default=(128, 128), help="image size of the 2D dataset")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--n", type=int, default=30, help="measurements per side")
    parser.add_argument("--workdir", type=Path, default=None, help="reuse a prepared folder (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "diffboost.json")
    args = parser.parse_args(argv)

    os.environ["nnUNet_n_proc_DA"] = "0"
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_synth.diffboost.trainer import DiffBoostTrainer

    class InputMix(DiffBoostTrainer):
        mix_mode = "input"

    torch.set_num_threads(1)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_diffboost_"))
    prepare(workdir, tuple(args.shape), args.cases)
    os.environ["nnUNet_n_proc_DA"] = "0"      # batches in this process: the loader itself is timed
    torch.manual_seed(0)
    plain, output_mix, input_mix = (make_trainer(c, workdir) for c in (nnUNetTrainer, DiffBoostTrainer, InputMix))
    for t in (output_mix, input_mix):
        t.network.load_state_dict(plain.network.state_dict())

    plain_loader, mix_loader = plain.dataloader_train.data_loader, output_mix.dataloader_train.data_loader
    print("timing the loaders", file=sys.stderr)
    load = alternate(lambda: next(plain_loader), lambda: next(mix_loader), args.n)
    from threadpoolctl import threadpool_limits
    rescanning = copy.copy(mix_loader)
    rescanning.single_threaded = lambda: threadpool_limits(limits=1, user_api=None)
    load_rescan = alternate(lambda: next(plain_loader), lambda: next(rescanning), args.n)

    mixed = next(mix_loader)
    real = {"data": mixed["data"], "target": mixed["target"]}
    double = {"data": torch.cat((mixed["data"], mixed["twin"])),
              "target": [torch.cat((t, t)) for t in mixed["target"]]}
    print("timing the iterations", file=sys.stderr)
    inp = alternate(lambda: plain.train_step(real), lambda: input_mix.train_step(mixed), args.n)
    out = alternate(lambda: plain.train_step(double), lambda: output_mix.train_step(mixed), args.n)

    seconds = {clock: {"nnUNetTrainer_loader_batch": load[clock][0], "diffboost_loader_batch": load[clock][1],
                       "nnUNetTrainer_iteration": inp[clock][0], "input_mix_iteration": inp[clock][1],
                       "nnUNetTrainer_double_batch_iteration": out[clock][0], "output_mix_iteration": out[clock][1]}
               for clock in ("cpu", "wall")}
    result = {
        "device": "cpu", "torch_threads": torch.get_num_threads(), "clock_for_ratios": "process CPU time",
        "patch_size": list(plain.configuration_manager.patch_size), "batch_size": plain.batch_size,
        "image_shape": list(args.shape), "measurements_per_side": args.n, "median_seconds": seconds,
        "loader_batches_per_s_ratio": load["cpu"][0] / load["cpu"][1],
        "loader_ratio_with_nnunet_thread_limit": load_rescan["cpu"][0] / load_rescan["cpu"][1],
        "input_mix_iteration_ratio": inp["cpu"][1] / inp["cpu"][0],
        "output_mix_iteration_ratio_vs_double_batch": out["cpu"][1] / out["cpu"][0],
        "wall_clock_ratios": {"loader_batches_per_s_ratio": load["wall"][0] / load["wall"][1],
                              "loader_ratio_with_nnunet_thread_limit": load_rescan["wall"][0] / load_rescan["wall"][1],
                              "input_mix_iteration_ratio": inp["wall"][1] / inp["wall"][0],
                              "output_mix_iteration_ratio_vs_double_batch": out["wall"][1] / out["wall"][0]},
    }
    result["targets_met"] = {k: (result[k] >= v if op == ">=" else result[k] <= v) for k, (op, v) in TARGETS.items()}
    write_result(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
