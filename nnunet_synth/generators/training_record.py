"""The model folder's record of what it was trained on (``training_cases.json``).

``fit`` writes it before training starts; ``generate`` copies its cases into
synthesis.json as ``trained_on``, where the leakage checks read them.
"""
from __future__ import annotations

from pathlib import Path

from nnunet_synth.atomic import read_json
from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import TRAINING_CASES_FILE


def training_record(generator: str, real, fold, split_source: str | None, cases: list[str]) -> dict:
    return {"generator": generator, "dataset": real.name, "fold": fold, "split": split_source, "cases": list(cases)}


def read_training_record(model_dir: Path, generator: str) -> dict:
    path = model_dir / TRAINING_CASES_FILE
    how = f"run `nnunet-synth fit {generator} -d DATASET --fold F -o {model_dir}`"
    if not model_dir.is_dir():
        raise SynthError(f"model folder {model_dir} does not exist; {how}")
    record = read_json(path, f"{model_dir} is not a complete model folder; {how}")
    if not isinstance(record, dict) or not isinstance(record.get("cases"), list) or "dataset" not in record:
        raise SynthError(f"{path}: expected an object with 'dataset' and 'cases'; {how}")
    if record.get("generator") != generator:
        raise SynthError(f"{model_dir} holds a '{record.get('generator')}' model, not '{generator}'")
    return record
