"""Run one converter: check the arguments, stage, convert, verify, rename."""
from __future__ import annotations

import os
from pathlib import Path

from nnunet_synth.convert.staging import StagedDataset
from nnunet_synth.errors import SynthError


def run_converter(module, source, dataset_id: int, raw_root=None, allow_skip: bool = False,
                  num_processes: int = 1, name: str | None = None, verify: bool = True,
                  options: dict | None = None) -> Path:
    """Convert ``source`` with a converter module; returns the new raw dataset folder.

    ``options`` are the converter's own options (see ``registry``), passed to
    its ``convert`` as keyword arguments.
    """
    source = Path(source)
    if not source.exists():
        raise SynthError(f"{source}: source folder not found")
    raw_root = raw_root or os.environ.get("nnUNet_raw")
    if not raw_root:
        raise SynthError("no output folder: set nnUNet_raw or pass -o RAW_DIR")
    if name is None:
        name = module.dataset_name(source) if hasattr(module, "dataset_name") else module.NAME
    with StagedDataset(raw_root, dataset_id, name, source, allow_skip=allow_skip, num_processes=num_processes,
                       verify=verify, preprocessed_root=os.environ.get("nnUNet_preprocessed")) as ds:
        module.convert(source, ds, **(options or {}))
    return ds.final
