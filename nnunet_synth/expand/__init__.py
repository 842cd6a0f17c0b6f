"""Offline expansion: the real cases plus synthetic cases as one nnU-Net dataset, with leakage-safe folds.

What it does, for the user, is the description of `nnunet-synth expand`
(nnunet_synth/commands/expand.py). The steps: ``inputs`` checks everything
first, then the folds are decided here, then ``raw`` and ``preprocessed``
write the two folders under temporary names, and both are renamed at the end,
so nothing is written when a check fails.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from nnunet_synth.errors import SynthError
from nnunet_synth.expand.inputs import ExpansionInputs, check_configurations, output_folders, read_inputs
from nnunet_synth.expand.preprocessed import write_preprocessed
from nnunet_synth.expand.raw import expanded_dataset_json, write_raw
from nnunet_synth.raw_dataset import nnunet_preprocessed_root, nnunet_raw_root
from nnunet_synth.splits import expanded_folds, leaks_by_generator, real_folds


@dataclass
class ExpandedFolds:
    splits: list[dict]                          # splits_final.json of the expanded dataset
    origin: str                                 # where the real folds came from
    leaks: dict[str, dict[int, list[str]]]      # generator -> fold -> validation cases it was trained on
    refused: list[int]


def expand(real: str | int, synthetic: list[str], output_id: int, name: str | None = None,
           plans: str = "nnUNetPlans", synthetic_only: bool = False, include_filtered: bool = False,
           allow_leakage: bool = False, overwrite: bool = False, progress: bool = True,
           configurations: tuple[str, ...] = ()) -> Path:
    """Build the expanded dataset; returns its raw folder.

    ``configurations`` are those the caller preprocesses afterwards: one the
    real plans do not define is refused before anything is written.
    """
    raw_root, pre_root = nnunet_raw_root(), nnunet_preprocessed_root()
    inputs = read_inputs(real, synthetic, pre_root, plans, include_filtered, progress)
    check_configurations(inputs, plans, configurations)
    out_name, existing = output_folders(inputs, (raw_root, pre_root), output_id, name, overwrite)
    folds = decide_folds(inputs, pre_root, synthetic_only, allow_leakage)
    expansion = {
        "real_dataset": inputs.real.name,
        "synthetic_datasets": inputs.synthetic_names,
        "real_cases": inputs.real.case_ids(),
        "synthetic_cases": sorted(inputs.manifest.cases),
        "synthetic_only": synthetic_only,
        "include_filtered": include_filtered,
        "plans": plans,
        "folds_from": folds.origin,
        "leaky_folds": {gid: {str(f): c for f, c in per.items()} for gid, per in folds.leaks.items()},
        "refused_folds": [] if allow_leakage else folds.refused,
        "allow_leakage": allow_leakage,
    }

    final_raw, final_pre = raw_root / out_name, pre_root / out_name
    raw_tmp, pre_tmp = raw_root / f".tmp-{out_name}", pre_root / f".tmp-{out_name}"
    for p in (raw_tmp, pre_tmp):
        if p.exists():
            shutil.rmtree(p)
        p.mkdir(parents=True)
    try:
        dataset_json = expanded_dataset_json(inputs, out_name, final_raw)
        write_raw(raw_tmp, dataset_json, inputs, expansion)
        write_preprocessed(pre_tmp, inputs, plans, out_name, dataset_json, folds.splits, expansion)
        for p in existing:
            shutil.rmtree(p)
        os.replace(raw_tmp, final_raw)
        os.replace(pre_tmp, final_pre)
    finally:
        for p in (raw_tmp, pre_tmp):
            if p.exists():
                shutil.rmtree(p)
    print(f"wrote {final_raw}: {len(inputs.real.case_ids())} real + {len(inputs.manifest.cases)} synthetic cases, "
          f"{len(folds.splits)} folds ({folds.origin})")
    return final_raw


def decide_folds(inputs: ExpansionInputs, preprocessed_root: Path, synthetic_only: bool,
                 allow_leakage: bool) -> ExpandedFolds:
    """The real folds with the synthetic cases added; leaky folds are reported, and refused unless allowed."""
    folds, origin = real_folds(inputs.real.name, inputs.real.case_ids(), preprocessed_root)
    leaks = leaks_by_generator(folds, {gid: g.trained_on for gid, g in inputs.manifest.generators.items()})
    refused = sorted({f for per_fold in leaks.values() for f in per_fold})
    for gid, per_fold in leaks.items():
        for fold, cases in per_fold.items():
            print(f"leakage: generator '{gid}' was trained on {len(cases)} validation case(s) of fold {fold}"
                  f" ({', '.join(cases[:3])}{' ...' if len(cases) > 3 else ''})")
    if refused and not allow_leakage:
        if len(refused) == len(folds):
            raise SynthError(f"every fold ({len(folds)}) validates on cases a generator was trained on; "
                             f"fit the generator on one fold's training cases, or pass --allow-leakage")
        print(f"folds {refused} are refused: their entries in splits_final.json hold real cases only, so any "
              f"trainer trains them without synthetic cases, and nnUNetTrainerSynthExpand will not train them "
              f"(rerun with --allow-leakage to add the synthetic cases anyway)")
    sources = inputs.manifest.sources()
    splits = expanded_folds(folds, sources, synthetic_only=synthetic_only,
                            refused=() if allow_leakage else set(refused))
    return ExpandedFolds(splits, origin, leaks, refused)
