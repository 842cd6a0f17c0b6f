"""Build an expanded raw dataset: the real cases plus synthetic cases, with leakage-safe folds.

Example (real dataset 501 planned and preprocessed; 502 written by
`nnunet-synth generate` from a generator fitted on fold 0):

    nnunet-synth expand -d 501 -s 502 -o 503 --preprocess 2d
    nnUNetv2_train 503 2d 0 -tr nnUNetTrainerSynthExpand

What it does:
  * checks the real and synthetic datasets (files, shapes, geometry, finite
    intensities, labels) and each synthetic dataset's synthesis.json (every
    source case must be real; each synthetic label has its source's geometry,
    and a twin its source's mask);
  * writes DatasetNEW_<name>/dataset.json that references the real and
    synthetic files in place (nnU-Net's "dataset" key; nothing is copied),
    plus a merged synthesis.json and expansion.json;
  * copies the real dataset's plans and fingerprint (planning uses real cases
    only, so synthetic cases never change the fingerprint);
  * writes splits_final.json from the real dataset's folds: validation holds
    real cases only, and a synthetic case joins the training set of a fold only
    if its source case is trained on in that fold (--synthetic-only: training
    sets hold synthetic cases only);
  * reports folds whose validation cases a generator was trained on, and marks
    them refused unless --allow-leakage is given: a refused fold's entry in
    splits_final.json holds its real training cases only, so any trainer
    (nnUNetTrainer included) trains it without synthetic cases, and
    nnUNetTrainerSynthExpand refuses to train it at all.
Nothing is written when a check fails (an unknown -c/--preprocess
configuration and a taken or invalid -o id included).
"""
from __future__ import annotations

from pathlib import Path

from nnunet_synth.atomic import read_json
from nnunet_synth.commands.options import add_output_argument, refuse_device
from nnunet_synth.expand import expand
from nnunet_synth.manifest import EXPANSION_FILE
from nnunet_synth.raw_dataset import nnunet_preprocessed_root
from nnunet_synth.splits import SPLITS_FILE, load_splits


def add_arguments(parser) -> None:
    parser.add_argument("-d", "--dataset", required=True, metavar="REAL", help="real dataset (id, name or folder)")
    parser.add_argument("-s", "--synthetic", action="append", required=True, metavar="SYNTH",
                        help="synthetic dataset with a synthesis.json (repeat for several)")
    add_output_argument(parser, "id", "NEW_ID", "the expanded dataset written to nnUNet_raw and nnUNet_preprocessed",
                        "--output-id", required=True)
    parser.add_argument("--name", help="name of the new dataset (default: <RealName>Expanded)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans",
                        help="plans identifier of the real dataset to copy (default nnUNetPlans)")
    parser.add_argument("--synthetic-only", action="store_true",
                        help="training folds hold synthetic cases only; validation stays real")
    parser.add_argument("--include-filtered", action="store_true",
                        help="also use synthetic cases the quality filter rejected (kept=false)")
    parser.add_argument("--allow-leakage", action="store_true",
                        help="do not refuse folds whose validation cases a generator was trained on (reported anyway)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset with the output id (raw and preprocessed folders)")
    parser.add_argument("-c", "--preprocess", nargs="+", metavar="CONFIG",
                        help="run nnU-Net's preprocessing for these configurations afterwards (e.g. 2d 3d_fullres; "
                             "-c as in nnUNetv2_preprocess)")
    parser.add_argument("-np", "--num-processes", type=int, default=2, help="processes for -c/--preprocess (default 2)")
    refuse_device(parser, "expand has no device option: it writes files, and nnU-Net's preprocessing runs on the CPU")


def run(args) -> int:
    from nnunet_synth.errors import SynthError

    if args.num_processes < 1:
        raise SynthError(f"-np {args.num_processes}: must be at least 1")
    # the configurations are checked against the real plans before anything is written
    result = expand(args.dataset, args.synthetic, args.output_id, name=args.name, plans=args.plans,
                    synthetic_only=args.synthetic_only, include_filtered=args.include_filtered,
                    allow_leakage=args.allow_leakage, overwrite=args.overwrite,
                    configurations=tuple(args.preprocess or ()))
    if args.preprocess:
        from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset

        preprocess_dataset(args.output_id, args.plans, args.preprocess, [args.num_processes])
        next_step = f"nnUNetv2_train {args.output_id} {args.preprocess[0]} FOLD -tr nnUNetTrainerSynthExpand"
    else:
        next_step = (f"nnUNetv2_preprocess -d {args.output_id} -plans_name {args.plans} -c CONFIG, then "
                     f"nnUNetv2_train {args.output_id} CONFIG FOLD -tr nnUNetTrainerSynthExpand")
    print(f"next: {next_step} {_fold_choice(result)}")
    return 0 if result else 1


def _fold_choice(raw_folder: Path) -> str:
    """'(FOLD: 0; folds 1, 2 refused, see above)': the folds the trainer accepts, read from the files expand wrote."""
    n_folds = len(load_splits(nnunet_preprocessed_root() / raw_folder.name / SPLITS_FILE))
    refused = set(read_json(raw_folder / EXPANSION_FILE)["refused_folds"])
    allowed = [f for f in range(n_folds) if f not in refused]
    text = f"(FOLD: {', '.join(map(str, allowed))}"
    if refused:
        text += f"; fold{'s' if len(refused) > 1 else ''} {', '.join(map(str, sorted(refused)))} refused, see above"
    return text + ")"
