"""Run a whole study from one config: fit, generate, expand / twins, train every arm, cross-eval, report.

    nnunet-synth study my_study.toml -w my_study            # run (or resume) it
    nnunet-synth study my_study.toml --dry-run              # every step's command, inputs and outputs
    nnunet-synth study --builtin lung --dry-run             # a config shipped with the package
    nnunet-synth study my_study.toml --only 'train-*-f0-r0' # some steps (shell-style patterns)
    nnunet-synth study my_study.toml --gpus 0,1             # trainings side by side, one per GPU

The config (TOML) names the real dataset, folds, test sets, generators, arms,
budget and repeats; docs/study.md documents every field. A config with
problems is refused before anything runs, one line per problem.

Each step is a command (`nnunet-synth ...`, `nnUNetv2_...`); a rerun skips the
steps that finished with the same settings and reruns a step whose command or
settings changed, with every step after it (markers in WORK/.study_steps).
Each repeat trains into its own nnUNet_results root, WORK/results/rR; the
other nnU-Net folders are yours (nnUNet_raw, nnUNet_preprocessed).

Output: WORK/report.md and WORK/results.json (cross-eval's table of every
arm and test set with Holm p-values and bootstrap intervals, the budget, each
arm's training time and forward passes per iteration, the environment, the
time of every step); cross-eval's own outputs are in WORK/cross_eval/fF_rR.

Built-in studies (--builtin): lung, thyroid, busi.
"""
from __future__ import annotations

from pathlib import Path

from nnunet_synth.commands.options import add_device_argument
from nnunet_synth.errors import SynthError


def add_arguments(parser) -> None:
    parser.add_argument("config", nargs="?", metavar="CONFIG", help="the study config (TOML)")
    parser.add_argument("--builtin", metavar="NAME", help="a config shipped with the package: lung, thyroid, busi")
    parser.add_argument("-w", "--workdir", default=None,
                        help="work folder (default ./study_<name>); rerun with the same folder to resume")
    parser.add_argument("--dry-run", action="store_true", help="print every step and what it reads and writes; run nothing")
    parser.add_argument("--only", nargs="+", metavar="STEP",
                        help="run only these steps (names or shell patterns, see --dry-run); the steps they wait "
                             "for must have finished")
    parser.add_argument("--gpus", metavar="0,1,...",
                        help="GPUs for trainings side by side (CUDA_VISIBLE_DEVICES, one training per GPU)")
    add_device_argument(parser, "torch device: auto (cuda if available), cpu or cuda (default auto)",
                        choices=("auto", "cpu", "cuda"), default="auto")


def run(args) -> int:
    from nnunet_synth.study.config import builtin_path, read_toml
    from nnunet_synth.study.run import check_environment, resolve_device, run_study

    if (args.config is None) == (args.builtin is None):
        raise SynthError("give a CONFIG file or --builtin NAME (one of them)")
    path = builtin_path(args.builtin) if args.builtin else Path(args.config)
    source = ["--builtin", args.builtin] if args.builtin else [str(path.resolve())]
    check_environment(args.dry_run)
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    if args.gpus is not None and not gpus:
        raise SynthError(f"--gpus {args.gpus!r}: give GPU numbers, e.g. 0,1")
    if gpus and args.device == "cpu":
        raise SynthError("--gpus and --device cpu contradict each other; give one")
    name = read_toml(path).get("study", {}).get("name", "study")
    shown_work = args.workdir or f"study_{name}"
    workdir = Path(shown_work).resolve()
    device = resolve_device("cuda" if gpus else args.device)
    self_command = ["nnunet-synth", "study", *source, "-w", str(workdir), "--device", device]
    return run_study(path, f"builtin:{args.builtin}" if args.builtin else str(path), workdir, device, self_command,
                     dry_run=args.dry_run, only=args.only, gpus=gpus, shown_work=shown_work)
