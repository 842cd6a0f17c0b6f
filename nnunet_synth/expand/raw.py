"""The raw folder of an expanded dataset: a dataset.json that references real and synthetic files in place.

nnU-Net's ``dataset`` key of dataset.json lists each case's files, so nothing
is copied and nnU-Net's own readers (and its integrity check) see one dataset.
"""
from __future__ import annotations

import os
from pathlib import Path

from nnunet_synth.atomic import write_json_atomic
from nnunet_synth.expand.inputs import ExpansionInputs
from nnunet_synth.manifest import EXPANSION_FILE


def expanded_dataset_json(inputs: ExpansionInputs, out_name: str, final_raw: Path) -> dict:
    """The real dataset.json, with ``dataset`` listing every real and selected synthetic case.

    Paths are relative to ``final_raw`` (where the folder will be after the
    rename), as nnU-Net resolves them against the dataset folder.
    """
    selected = inputs.manifest.cases
    files = {case: _case_files(inputs.real, case, final_raw) for case in inputs.real.case_ids()}
    for ds in inputs.synthetic:
        files.update({case: _case_files(ds, case, final_raw) for case in ds.case_ids() if case in selected})
    dataset_json = {k: v for k, v in inputs.real.dataset_json.items() if k != "dataset"}
    dataset_json.update(numTraining=len(files), name=out_name, dataset=dict(sorted(files.items())),
                        description=f"{inputs.real.name} plus {len(selected)} synthetic cases from "
                                    f"{', '.join(inputs.synthetic_names)} (nnunet-synth expand)")
    return dataset_json


def _case_files(ds, case: str, start: Path) -> dict:
    return {"images": [os.path.relpath(f, start) for f in ds.image_files(case)],
            "label": os.path.relpath(ds.label_file(case), start)}


def write_raw(folder: Path, dataset_json: dict, inputs: ExpansionInputs, expansion: dict) -> None:
    write_json_atomic(folder / "dataset.json", dataset_json)
    inputs.manifest.save(folder)
    write_json_atomic(folder / EXPANSION_FILE, expansion)
