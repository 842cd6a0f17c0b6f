"""The preprocessed folder of an expanded dataset, before nnU-Net preprocesses its cases.

The real dataset's plans and fingerprint are copied (planning uses real cases
only, so synthetic cases never change them), and the leakage-safe folds are
written as nnU-Net's splits_final.json. The trainer reads synthesis.json and
expansion.json from here.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from nnunet_synth.atomic import read_json, write_json_atomic
from nnunet_synth.expand.inputs import ExpansionInputs
from nnunet_synth.manifest import EXPANSION_FILE
from nnunet_synth.splits import SPLITS_FILE


def write_preprocessed(folder: Path, inputs: ExpansionInputs, plans: str, out_name: str, dataset_json: dict,
                       splits: list[dict], expansion: dict) -> None:
    real_plans = read_json(inputs.real_preprocessed / f"{plans}.json")
    real_plans["dataset_name"] = out_name
    write_json_atomic(folder / f"{plans}.json", real_plans)
    shutil.copy2(inputs.real_preprocessed / "dataset_fingerprint.json", folder / "dataset_fingerprint.json")
    write_json_atomic(folder / "dataset.json", dataset_json)
    write_json_atomic(folder / SPLITS_FILE, splits)
    inputs.manifest.save(folder)
    write_json_atomic(folder / EXPANSION_FILE, expansion)
