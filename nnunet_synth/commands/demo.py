"""The whole chain on built-in data: does synthetic data help a model trained on one device?

    nnunet-synth demo                       # a new folder ./nnunet_synth_demo, about 15 minutes on 2 CPU cores
    nnunet-synth demo -w my_demo --budget 30

Steps (each prints the command it runs; a rerun skips completed steps, so an
interrupted demo resumes where it stopped):

  1. phantom      ultrasound phantom datasets: training device A, test devices A, B, C
  2. plan         nnU-Net planning and preprocessing of device A (real cases only)
  3. fit          patch-DDPM fitted on fold 0's training cases
  4. twins        synthetic twins (new images for the real masks) and
  5. new          new pairs (deformed masks, new images)
  6. twin-prep    twins preprocessed with device A's plans, for DiffBoost
  7. expand       real + synthetic dataset with leakage-safe folds
  8-10. train     nnUNetTrainerShort (baseline), nnUNetTrainerDiffBoostShort,
                  nnUNetTrainerSynthExpandShort on fold 0
  11. cross-eval  every model on devices A, B and C, paired tests against the baseline
then prints the table of Dice and HD95 per trainer and device and the path of report.md.

--budget (minutes) sizes the schedules (diffusion training steps, nnU-Net
iterations). With CUDA present, the default budget and schedules are larger.
nnU-Net's variables are set for the work folder; your own are not touched.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from nnunet_synth.demo import Demo, results_table, schedule_for


def add_arguments(parser) -> None:
    parser.add_argument("-w", "--workdir", default="nnunet_synth_demo",
                        help="work folder (default ./nnunet_synth_demo); rerun with the same folder to resume")
    parser.add_argument("--budget", type=float, default=None,
                        help="wall-clock budget in minutes that sizes the schedules (default 15 on CPU, 60 with CUDA)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto uses CUDA when present (default)")


def run(args) -> int:
    import torch

    from nnunet_synth.errors import SynthError

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SynthError("--device cuda: no CUDA device is available")
    budget = args.budget if args.budget is not None else (60.0 if device == "cuda" else 15.0)
    schedule = schedule_for(budget, device == "cuda")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    settings_file = workdir / "demo_settings.json"
    settings = {"budget_minutes": budget, "device": device, "schedule": asdict(schedule)}
    if settings_file.exists():
        previous = json.loads(settings_file.read_text())
        if previous != json.loads(json.dumps(settings)):
            raise SynthError(f"{settings_file}: this work folder was made with other settings "
                             f"(budget {previous.get('budget_minutes')}, device {previous.get('device')}); "
                             f"use a new --workdir or the same settings")
    else:
        settings_file.write_text(json.dumps(settings, indent=2) + "\n")
    print(f"nnunet-synth demo in {workdir} on {device}, budget {budget:g} min: {schedule}")
    start = time.time()
    Demo(workdir, schedule, device).run()
    summary = json.loads((workdir / "cross_eval" / "summary.json").read_text())
    print("\nTrained on device A (fold 0); tested on devices A, B, C. "
          "p: Wilcoxon signed-rank against the baseline, Holm-corrected.\n")
    print(results_table(summary))
    print(f"\nreport: {workdir / 'cross_eval' / 'report.md'} (plots in {workdir / 'cross_eval' / 'plots'})")
    print(f"this run: {(time.time() - start) / 60:.1f} min")
    return 0
