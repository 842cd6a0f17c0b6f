"""The whole chain on built-in data: does synthetic data help a model trained on one scanner?

    nnunet-synth demo                       # a new folder ./nnunet_synth_demo, about 15 minutes on 2 CPU cores
    nnunet-synth demo -w my_demo --budget 30

Steps (each prints the command it runs; a rerun skips completed steps, so an
interrupted demo resumes where it stopped):

  1. phantom      ultrasound phantom datasets: training scanner A, test scanners A, B, C
  2. plan         nnU-Net planning and preprocessing of scanner A (real cases only)
  3. fit          patch-DDPM fitted on fold 0's training cases
  4. twins        synthetic twins (new images for the real masks) and
  5. new          new pairs (deformed masks, new images)
  6. twin-prep    twins preprocessed with scanner A's plans, for DiffBoost
  7. expand       real + synthetic dataset with leakage-safe folds
  8-10. train     nnUNetTrainerShort (baseline), nnUNetTrainerDiffBoostShort,
                  nnUNetTrainerSynthExpandShort on fold 0
  11. cross-eval  every model on scanners A, B and C, paired tests against the baseline
then prints the table of Dice and HD95 per trainer and scanner and the path of report.md.

--budget (minutes) sizes the schedules (diffusion training steps, nnU-Net
iterations). With CUDA present, the default budget and schedules are larger.
nnU-Net's variables are set for the work folder; your own are not touched.
"""
from __future__ import annotations

from nnunet_synth.commands.options import add_device_argument
from nnunet_synth.demo import run_demo


def add_arguments(parser) -> None:
    parser.add_argument("-w", "--workdir", default="nnunet_synth_demo",
                        help="work folder (default ./nnunet_synth_demo); rerun with the same folder to resume")
    parser.add_argument("--budget", type=float, default=None,
                        help="wall-clock budget in minutes that sizes the schedules (default 15 on CPU, 60 with CUDA)")
    add_device_argument(parser, "torch device; auto uses CUDA when present (default auto)",
                        choices=("auto", "cpu", "cuda"), default="auto")


def run(args) -> int:
    run_demo(args.workdir, args.budget, args.device)
    return 0
