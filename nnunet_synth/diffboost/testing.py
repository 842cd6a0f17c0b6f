"""A synthetic twin dataset for tests, benchmarks and demos: real images plus a shift and noise, same masks."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def make_twin_dataset(raw_root: str | os.PathLike, real: str | int, dataset_id: int, k: int = 2,
                      shift: float = 10.0, noise: float = 0.0, trained_on: list[str] | None = None,
                      seed: int = 0, cases: list[str] | None = None) -> Path:
    """Write ``Dataset{dataset_id}_{real name}Twins`` with ``k`` twins per real case and a valid synthesis.json.

    Twin j of a case is ``image + shift * (j + 1) + N(0, noise)``, cast to the
    source's data type, with the real case's mask and geometry. ``trained_on``
    is what the manifest records as the generator's training cases (default:
    none, so no fold leaks); ``cases`` limits the twins to some real cases.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    from nnunet_synth.manifest import GeneratorRecord, Manifest, SyntheticCase, sample_seed, synthetic_case_id
    from nnunet_synth.raw_dataset import RawDataset, write_case

    source = RawDataset.open(real)
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{source.name.split('_', 1)[1]}Twins"
    manifest = Manifest(source.name, {"test": GeneratorRecord("test-shift", "0", "", "", list(trained_on or []))})
    for case in cases if cases is not None else source.case_ids():
        images, seg, props = source.read_case(case)
        dtype = source.source_dtype(case)
        for j in range(k):
            case_seed = sample_seed(seed, case, j)
            rng = np.random.default_rng(case_seed)
            twin = images + shift * (j + 1) + (rng.normal(0, noise, images.shape) if noise else 0)
            twin_id = synthetic_case_id(case, "twin", j)
            write_case(folder, twin_id, twin.astype(np.float32), seg, props, source.file_ending, dtype)
            manifest.cases[twin_id] = SyntheticCase("test", case, "twin", case_seed)
    generate_dataset_json(str(folder), dict(source.dataset_json["channel_names"]), dict(source.labels),
                          len(manifest.cases), source.file_ending, dataset_name=folder.name)
    manifest.save(folder)
    return folder
