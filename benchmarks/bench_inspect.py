"""``nnunet-synth inspect`` time against ``nnUNetv2_predict`` on the same synthetic images, in one run.

Both are run as the user runs them (a fresh process each, the same baseline
fold, the same device and TTA setting), alternately ``--repeats`` times; the
medians of the wall times give the ratio inspect / predict (target: <= 1.5);
the CPU-time ratio (process and children) is reported too, because on a
shared machine other processes' load disturbs it less.
Inspect does more than predict: it also reads the real cases, takes encoder
features of every case, compares every synthetic case with the real training
cases and writes the report. It runs on a scratch copy of the raw datasets,
so the demo's synthesis.json is not touched.

The demo's work folder provides the baseline and the synthetic dataset; one
is made with ``nnunet-synth demo --budget 1`` when ``--workdir`` holds none.

    .venv/bin/python benchmarks/bench_inspect.py [--workdir DIR] [--synthetic 704] [--device cpu] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_results import write_result

HERE = Path(__file__).resolve().parent
TARGET = 1.5
TRAINER, PLANS, CONFIGURATION = "nnUNetTrainerShort", "nnUNetPlans", "2d"


def venv_command(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def timed_run(command: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench_inspect_demo")
    parser.add_argument("--synthetic", default="704", help="id of the demo's synthetic dataset (704 twins, 705 new)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--disable-tta", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "inspect.json")
    args = parser.parse_args()

    from nnunet_synth.environment import trainer_folder

    if not (args.workdir / "nnUNet_results").is_dir():
        print(f"running the demo into {args.workdir}", file=sys.stderr)
        subprocess.run([venv_command("nnunet-synth"), "demo", "-w", str(args.workdir), "--budget", "1",
                        "--device", args.device], check=True, capture_output=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench_inspect_"))
    try:
        raw = scratch / "nnUNet_raw"
        real = next((args.workdir / "nnUNet_raw").glob("Dataset700_*"))
        synthetic = next((args.workdir / "nnUNet_raw").glob(f"Dataset{int(args.synthetic):03d}_*"))
        for folder in (real, synthetic):
            shutil.copytree(folder, raw / folder.name, ignore=shutil.ignore_patterns("inspect"))
        env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(args.workdir / "nnUNet_preprocessed"),
                   nnUNet_results=str(args.workdir / "nnUNet_results"), nnUNet_extTrainer=trainer_folder(),
                   nnUNet_compile="false")
        baseline = args.workdir / "nnUNet_results" / real.name / f"{TRAINER}__{PLANS}__{CONFIGURATION}"
        n_cases = len(list((synthetic / "labelsTr").glob("*.nii.gz")))
        tta = ["--disable_tta"] if args.disable_tta else []
        predict = [venv_command("nnUNetv2_predict"), "-i", str(raw / synthetic.name / "imagesTr"), "-o",
                   str(scratch / "predictions"), "-d", real.name, "-tr", TRAINER, "-p", PLANS, "-c", CONFIGURATION,
                   "-f", "0", "-npp", "1", "-nps", "1", "-device", args.device, *tta]
        inspect = [venv_command("nnunet-synth"), "inspect", synthetic.name, "-d", real.name, "--baseline",
                   str(baseline), "--filter", "0", "--fold", "0", "--device", args.device, "--overwrite", *tta]
        times = {"predict": [], "inspect": []}
        for i in range(args.repeats):
            print(f"repeat {i + 1}/{args.repeats}", file=sys.stderr)
            shutil.rmtree(scratch / "predictions", ignore_errors=True)
            times["predict"].append(timed_run(predict, env))
            times["inspect"].append(timed_run(inspect, env))
        report = json.loads((raw / synthetic.name / "inspect" / "summary.json").read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    median = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    median_cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
    ratio = median["inspect"] / median["predict"]
    result = {"synthetic_dataset": synthetic.name, "n_synthetic": n_cases, "n_real": report["n_real_train"]
              + report["n_real_validation"], "device": args.device, "use_mirroring": not args.disable_tta,
              "repeats": args.repeats, "predict_wall_s": [round(t[0], 2) for t in times["predict"]],
              "inspect_wall_s": [round(t[0], 2) for t in times["inspect"]],
              "predict_cpu_s": [round(t[1], 2) for t in times["predict"]],
              "inspect_cpu_s": [round(t[1], 2) for t in times["inspect"]],
              "ratio_inspect_over_predict": round(ratio, 3),
              "cpu_ratio_inspect_over_predict": round(median_cpu["inspect"] / median_cpu["predict"], 3),
              "target_ratio": TARGET, "meets_target": ratio <= TARGET}
    write_result(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
