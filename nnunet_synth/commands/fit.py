"""Train a generator on the real training cases of one cross-validation fold.

The folds are nnU-Net's: nnUNet_preprocessed/DatasetXXX/splits_final.json when
it exists, otherwise the split nnU-Net itself would create (5 folds, seed
12345). Only the fold's training cases are used, so the fold's validation cases
stay unseen by the generator (--fold all uses every case: then no fold's
validation is clean, and `expand` will report it). --cases gives an explicit
list instead.

Each case's image channels are clipped at their 0.5 and 99.5 percentiles and
scaled to [-1, 1] before the generator sees them. The model folder gets
training_cases.json (dataset, fold, case ids), which `nnunet-synth generate`
copies into the synthetic dataset's synthesis.json for the leakage checks.
Rerunning the same command resumes training where the generator supports it.

Examples:
  nnunet-synth fit patch-ddpm -d 901 -f 0 -o models/thyroid_f0
  nnunet-synth fit patch-ddpm -d Dataset901_Thyroid --cases case_000 case_001 -o models/thyroid_two
  nnunet-synth fit patch-ddpm --help        (the generator's own options)
"""
from __future__ import annotations

import argparse
import sys

from nnunet_synth.commands.generator_options import add_dataset_argument, add_generator_subcommands, settings_from_args
from nnunet_synth.commands.options import add_output_argument, refuse_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_generator_subcommands(parser, "fit_settings", _add_common_arguments)


def _add_common_arguments(p: argparse.ArgumentParser) -> None:
    add_dataset_argument(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("-f", "--fold", metavar="F", help="train on the training cases of fold F (0-4, or 'all')")
    which.add_argument("--cases", nargs="+", metavar="CASE", help="train on exactly these cases")
    add_output_argument(p, "dir", "MODEL_DIR", "the model folder to write (or resume)", "--output", required=True)
    refuse_device(p, "fit has no device option: it trains on the GPU when one is visible (CUDA_VISIBLE_DEVICES "
                     "picks it), or on the CPU with --cpu")


def run(args) -> int:
    from nnunet_synth.generators.fit import FitJob, fit_generator

    job = FitJob(generator=args.generator, dataset=args.dataset, model_dir=args.output, fold=args.fold,
                 cases=tuple(args.cases) if args.cases else None)
    fit_generator(job, settings_from_args(args.settings_class, args))
    return 0


if __name__ == "__main__":
    # `accelerate launch -m nnunet_synth.commands.fit ...` for multi-GPU training.
    from nnunet_synth.commands.runner import standalone

    sys.exit(standalone("fit", __doc__, add_arguments, run))
