"""The whole chain on built-in data: does synthetic data help a model trained on one scanner?

    nnunet-synth demo                       # a new folder ./nnunet_synth_demo, 8.5 to 15 minutes on 2 CPU cores
    nnunet-synth demo -w my_demo --budget 30
    nnunet-synth demo --dry-run             # every step's command, what it reads and writes; runs nothing

The demo is the built-in study `demo` (`nnunet-synth study --builtin demo`,
docs/study.md) in a work folder of its own: nnU-Net's folders are
WORK/nnUNet_raw, WORK/nnUNet_preprocessed and WORK/nnUNet_results (your own
variables are not touched). Its steps:

  phantom            ultrasound phantom: training scanner A, test scanners A, B, C
  plan               nnU-Net planning and preprocessing of scanner A
  fit, generate      a patch-DDPM fitted on fold 0's training cases; partial-noise twins (strength 0.3)
  train-baseline     the baseline of repeat 0, which inspect needs
  inspect            consistency, memorization, fidelity of the twins; the filter keeps consistency >= 0.5
  twins, expand      the kept twins for DiffBoost; expanded datasets with the kept twins and with all of them
  train-*            baseline, DiffBoost, expansion, unfiltered expansion; two repeats each
  cross-eval         every model on fold 0's validation and scanners A, B, C, per repeat
  report             WORK/report.md and WORK/results.json
then prints the table over the repeats (per-case means, Holm-corrected Wilcoxon p-values against the baseline).

Each step prints its command; a rerun skips completed steps, so an interrupted
demo resumes where it stopped. --budget (minutes) scales the built-in config
(phantom size, diffusion training steps, nnU-Net iterations) and writes it to
WORK/demo.toml; with CUDA present the default budget and schedules are larger.
"""
from __future__ import annotations

from nnunet_synth.commands.options import add_device_argument


def add_arguments(parser) -> None:
    parser.add_argument("-w", "--workdir", default="nnunet_synth_demo",
                        help="work folder (default ./nnunet_synth_demo); rerun with the same folder to resume")
    parser.add_argument("--budget", type=float, default=None,
                        help="wall-clock budget in minutes that sizes the schedules (default 15 on CPU, 60 with CUDA)")
    parser.add_argument("--dry-run", action="store_true", help="print every step and what it reads and writes; run nothing")
    parser.add_argument("--only", nargs="+", metavar="STEP",
                        help="run only these steps (names or shell patterns, see --dry-run)")
    add_device_argument(parser, "torch device; auto uses CUDA when present (default auto)",
                        choices=("auto", "cpu", "cuda"), default="auto")


def run(args) -> int:
    from nnunet_synth.demo import run_demo

    return run_demo(args.workdir, args.budget, args.device, dry_run=args.dry_run, only=args.only)
