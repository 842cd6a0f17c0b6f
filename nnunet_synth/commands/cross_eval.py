"""Predict test sets with several trained models and compare them case by case.

For every model and test set, nnU-Net's predictor writes the predictions
(predictions that already exist are reused), every prediction is scored with
the metrics of ``nnunet-synth evaluate``, and the models are compared with the
baseline on the same cases (Wilcoxon signed-rank, paired t-test, bootstrap
intervals, Holm correction across test sets and labels).

Models: --model NAME=DATASET:TRAINER:PLANS:CONFIGURATION:FOLDS, where FOLDS is
"0", "0,1,2,3,4" or "all" (several folds are ensembled, as nnUNetv2_predict
does). The model folder is $nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION.

Test sets: --test NAME=DATASET_OR_FOLDER. A raw dataset (an id, a name in
$nnUNet_raw, or a folder with dataset.json) is read from imagesTs/labelsTs when
both exist, else from imagesTr/labelsTr. A plain folder holds images/ (nnU-Net
channel naming, CASE_0000.ext) and labels/ (CASE.ext). Test images must use the
models' file ending.

--label-map 255:1 (repeatable, or "255:1,128:2") maps label values of the test
sets before evaluation; the mapped labels are written under OUTPUT/labels and
the mapping is recorded in summary.json and report.md.

Example (the thyroid study: trained on one dataset, tested on two others):

    nnunet-synth cross-eval \\
        --model baseline=951:nnUNetTrainer:nnUNetPlans:2d:0,1,2,3,4 \\
        --model diffboost=951:nnUNetTrainerDiffBoost:nnUNetPlans:2d:0,1,2,3,4 \\
        --test TDID=952 --test TUCC=/data/tucc --label-map 255:1 \\
        --baseline baseline -o cross_eval_out

Prediction options keep nnU-Net's names: -device (or --device), -chk,
-step_size, --disable_tta (or --disable-tta). Each model's predictor is built
once for all test sets; one progress bar per model and test set shows the
cases, and nnU-Net's own output goes to OUTPUT/predict.log.

Writes to OUTPUT: per_case.csv, summary.json, comparisons.csv, report.md,
predict.log, plots/*.png, predictions/MODEL/TEST/ (with each pair's
summary.json). summary.json and report.md record this command line (with
every option spelled out), the package versions, the device and the date.
"""
from __future__ import annotations

import math
import shlex
from pathlib import Path

from nnunet_synth.commands.options import add_output_argument
from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.cross_eval import run_cross_eval
from nnunet_synth.evaluation.prediction import ModelSpec, PredictionSettings


def parse_named(items: list[str], option: str) -> dict[str, str]:
    """NAME=VALUE options (--model, --test) as a dict; a name used twice is an error, not an override."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SynthError(f"{option} {item}: expected NAME=VALUE")
        if name in out:
            raise SynthError(f"{option}: the name '{name}' is used twice")
        out[name] = value
    return out


def parse_label_map(items: list[str] | None) -> dict[int, int]:
    """--label-map FROM:TO options (repeated or comma-separated) as {FROM: TO}."""
    mapping: dict[int, int] = {}
    for item in items or []:
        for pair in item.split(","):
            src, sep, dst = pair.partition(":")
            if not sep or not src.strip().lstrip("-").isdigit() or not dst.strip().lstrip("-").isdigit():
                raise SynthError(f"--label-map {item}: expected FROM:TO pairs of integers, e.g. 255:1")
            if int(src) in mapping and mapping[int(src)] != int(dst):
                raise SynthError(f"--label-map: value {src} is mapped twice ({mapping[int(src)]} and {dst})")
            mapping[int(src)] = int(dst)
    return mapping


def add_arguments(parser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DATASET:TRAINER:PLANS:CONFIG:FOLDS",
                        help="a trained model; repeat for each model")
    parser.add_argument("--test", action="append", required=True, metavar="NAME=DATASET_OR_FOLDER",
                        help="a test set; repeat for each test set")
    parser.add_argument("--baseline", required=True, help="the model NAME the others are compared with")
    add_output_argument(parser, "dir", "DIR", "where predictions, per_case.csv, summary.json, report.md and plots go",
                        "--output", required=True)
    parser.add_argument("--label-map", action="append", metavar="FROM:TO",
                        help="map test label values before evaluation, e.g. 255:1 (repeatable)")
    parser.add_argument("--device", "-device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="prediction device (default: cuda if available)")
    parser.add_argument("--disable-tta", "--disable_tta", dest="disable_tta", action="store_true",
                        help="no mirroring at prediction time (faster)")
    parser.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth",
                        help="checkpoint file in each fold folder (default checkpoint_final.pth)")
    parser.add_argument("-step_size", dest="step_size", type=float, default=0.5,
                        help="sliding-window step as a fraction of the patch size (default 0.5, as nnU-Net)")
    parser.add_argument("-np", dest="num_processes", type=int, default=1, help="evaluation worker processes")
    parser.add_argument("--bootstrap", type=int, default=10000, help="paired bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level; comparisons whose n cannot reach it are flagged (default 0.05)")
    parser.add_argument("--examples", type=int, default=3, help="example cases per direction in the grid (default 3)")


def command_line(args) -> str:
    """The command with every option spelled out (defaults included), so the record reruns it exactly."""
    words = ["nnunet-synth", "cross-eval"]
    for option, items in (("--model", args.model), ("--test", args.test), ("--label-map", args.label_map or [])):
        for item in items:
            words += [option, item]
    words += ["--baseline", args.baseline, "-o", args.output, "-device", args.device, "-chk", args.checkpoint,
              "-step_size", f"{args.step_size:g}", "-np", str(args.num_processes), "--bootstrap", str(args.bootstrap),
              "--seed", str(args.seed), "--alpha", f"{args.alpha:g}", "--examples", str(args.examples)]
    if args.disable_tta:
        words.append("--disable_tta")
    return shlex.join(words)


def run(args) -> int:
    models = {n: ModelSpec.parse(v, n) for n, v in parse_named(args.model, "--model").items()}
    tests = parse_named(args.test, "--test")
    if args.bootstrap < 100:
        raise SynthError(f"--bootstrap {args.bootstrap}: use at least 100 resamples")
    if not 0 < args.alpha < 1:
        raise SynthError(f"--alpha {args.alpha}: use a level between 0 and 1, e.g. 0.05")
    if args.num_processes < 1:
        raise SynthError(f"-np must be at least 1, got {args.num_processes}")
    settings = PredictionSettings(device=args.device, use_mirroring=not args.disable_tta, checkpoint=args.checkpoint,
                                  tile_step_size=args.step_size)
    summary = run_cross_eval(models, tests, args.output, args.baseline, parse_label_map(args.label_map),
                             prediction=settings, num_processes=args.num_processes, n_resamples=args.bootstrap,
                             seed=args.seed, n_examples=args.examples, command=command_line(args), alpha=args.alpha)
    for row in summary["comparisons"]:
        if row["metric"] == "Dice":
            p = row["wilcoxon_p_holm"]
            print(f"{row['test_set']}/{row['label']}: {row['model']} - {row['baseline']} Dice "
                  f"{row['mean_diff']:+.4f} (Wilcoxon p, Holm: {'n/a' if math.isnan(p) else f'{p:.3g}'})")
    print(f"wrote {Path(args.output) / 'report.md'}")
    return 0
