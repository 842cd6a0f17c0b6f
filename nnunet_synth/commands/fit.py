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
  nnunet-synth fit patch-ddpm -d 901 --fold 0 -o models/thyroid_f0
  nnunet-synth fit patch-ddpm -d Dataset901_Thyroid --cases case_000 case_001 -o models/thyroid_two
  nnunet-synth fit patch-ddpm --help        (the generator's own options)
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nnunet_synth.generators.options import add_generator_subcommands

    add_generator_subcommands(parser, "add_fit_arguments", _add_common_arguments)


def _add_common_arguments(p: argparse.ArgumentParser) -> None:
    from nnunet_synth.generators.options import add_dataset_argument

    add_dataset_argument(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--fold", metavar="F", help="train on the training cases of fold F (0-4, or 'all')")
    which.add_argument("--cases", nargs="+", metavar="CASE", help="train on exactly these cases")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="model folder to write (or resume)")


def training_cases(real, args) -> tuple[list[str], object, str | None]:
    """(case ids, fold, where the split came from)."""
    from nnunet_synth.errors import SynthError
    from nnunet_synth.generators.framework import check_case_ids
    from nnunet_synth.splits import fold_training_cases, real_folds

    if args.cases:
        return check_case_ids(real, args.cases, "--cases"), None, None
    fold = args.fold if args.fold == "all" else _fold_number(args.fold)
    import os

    try:
        folds, where = real_folds(real.name, real.case_ids(), os.environ.get("nnUNet_preprocessed") or None)
    except ValueError as e:  # nnU-Net's default split needs at least 5 cases
        raise SynthError(f"{real.folder}: cannot make nnU-Net's default folds ({e}); "
                         f"give the training cases with --cases") from None
    cases = fold_training_cases(folds, fold)
    if not cases:
        raise SynthError(f"fold {fold} of {real.name} has no training cases ({where})")
    return cases, fold, where


def _fold_number(text: str) -> int:
    from nnunet_synth.errors import SynthError

    try:
        return int(text)
    except ValueError:
        raise SynthError(f"--fold {text!r}: expected a fold number or 'all'") from None


def run(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from nnunet_synth.errors import SynthError
    from nnunet_synth.generators.base import TrainingCase
    from nnunet_synth.generators.framework import (TRAINING_CASES_FILE, atomic_json, read_source_case,
                                                   same_json, training_record)
    from nnunet_synth.generators.intensity import normalise_image
    from nnunet_synth.raw_dataset import RawDataset

    real = RawDataset.open(args.dataset)
    case_ids, fold, split_source = training_cases(real, args)
    model_dir = Path(args.output).resolve()
    record = training_record(args.generator, real, fold, split_source, case_ids)
    record_file = model_dir / TRAINING_CASES_FILE
    if record_file.is_file() and not same_json(_load(record_file), record):
        raise SynthError(f"{record_file}: this model folder belongs to another training run "
                         f"(other generator, dataset or cases); choose another -o folder")
    labels = sorted(int(v) for v in real.label_manager.all_labels)
    cases = []
    for case_id in tqdm(case_ids, desc=f"reading {real.name}", unit="case"):
        source = read_source_case(real, case_id)
        cases.append(TrainingCase(case_id, normalise_image(source.image), source.seg, source.spacing))

    created = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    # Written first, so an interrupted fit that is rerun with other cases is refused above.
    atomic_json(record_file, record)
    try:
        args.generator_class.fit(cases, labels, model_dir, args)
    except BaseException:
        if created and [p.name for p in model_dir.iterdir()] == [TRAINING_CASES_FILE]:
            # The generator refused before writing anything: leave nothing behind.
            record_file.unlink()
            model_dir.rmdir()
        raise
    print(f"trained {args.generator} on {len(cases)} case(s) of {real.name}"
          f"{'' if fold is None else f' (fold {fold})'}; model folder {model_dir}")
    return 0


def _load(path):
    import json

    from nnunet_synth.errors import SynthError

    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise SynthError(f"{path}: not valid JSON; delete it or choose another -o folder") from None


if __name__ == "__main__":
    # `accelerate launch -m nnunet_synth.commands.fit ...` runs this in every process.
    from nnunet_synth.commands.runner import standalone

    sys.exit(standalone("fit", __doc__, add_arguments, run))
