"""Evaluate a folder of predictions against a folder of reference segmentations.

Like ``nnUNetv2_evaluate_folder``, with spacing-aware surface metrics. Files are
read with the reader-writer nnU-Net picks for the dataset, cases are matched by
file name, and the output extends nnU-Net's ``summary.json``: the same
``metric_per_case``, ``mean`` and ``foreground_mean`` keys (Dice, IoU, TP, FP,
FN, TN, n_pred, n_ref), plus Precision, Recall, HD95, HD95_pooled and ASSD (mm),
the flags ``empty_pred``/``empty_ref`` per case, and ``n_valid`` (how many
cases each nanmean was taken over). See ``nnunet_synth.evaluation.metrics`` for
the definitions and edge cases.

Example:

    nnunet-synth evaluate $nnUNet_raw/Dataset951_Thyroid/labelsTr preds/ \\
        -djfile $nnUNet_raw/Dataset951_Thyroid/dataset.json -o preds/summary.json -np 4

Without -djfile, the dataset.json next to REF_FOLDER (REF_FOLDER/../dataset.json)
or in PRED_FOLDER (nnUNetv2_predict writes one there) is used.

An existing output file that nnunet-synth did not write (nnU-Net's own
summary.json in fold_X/validation, say) is never replaced without --overwrite.
Every reference case needs a prediction; with --chill (nnU-Net's option) the
predicted cases are scored and the missing ones listed.
"""
from __future__ import annotations

import os

from nnunet_synth.commands.options import add_output_argument
from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.evaluate import evaluate_folders


def add_arguments(parser) -> None:
    parser.add_argument("ref_folder", help="folder with reference segmentations (e.g. labelsTr)")
    parser.add_argument("pred_folder", help="folder with predicted segmentations, named like the references")
    add_output_argument(parser, "file", "FILE.json", "the JSON summary to write (default: PRED_FOLDER/summary.json)",
                        dest="output", default=None)
    parser.add_argument("-djfile", default=None, help="dataset.json (default: REF_FOLDER/../dataset.json, "
                                                     "else PRED_FOLDER/dataset.json)")
    parser.add_argument("-np", dest="num_processes", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--chill", action="store_true",
                        help="score the cases that have a prediction and list the missing ones (default: a missing "
                             "prediction is an error)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an output file that nnunet-synth did not write (e.g. nnU-Net's own summary.json)")


def run(args) -> int:
    output = args.output or os.path.join(args.pred_folder, "summary.json")
    if args.num_processes < 1:
        raise SynthError(f"-np must be at least 1, got {args.num_processes}")
    summary = evaluate_folders(args.ref_folder, args.pred_folder, output, args.djfile, args.num_processes,
                               chill=args.chill, overwrite=args.overwrite)
    for metric in ("Dice", "HD95", "ASSD"):
        print(f"{metric:>5}: foreground mean {summary['foreground_mean'][metric]:.4f}")
    missing = summary["missing_predictions"]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        print(f"{len(missing)} case(s) have no prediction and are not scored (--chill): {shown}")
    print(f"{summary['n_cases']} case(s) scored; wrote {output}")
    return 0
