"""The output folder of ``nnunet-synth generate``: create, resume, and finish it.

While a run is in progress the dataset folder holds a hidden ``.synthesis_parts/``
folder with ``parameters.json`` (everything that determines the output) and one
small JSON record per finished synthetic case. A rerun with the same parameters
resumes; shards of an ``accelerate launch`` run share it. The main process
writes ``dataset.json`` and ``synthesis.json`` from all records at the end and
removes the parts folder. Case files are written into a per-process staging
folder inside the parts folder and renamed into ``imagesTr``/``labelsTr``, so
concurrent processes never see or remove each other's temporary files.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from nnunet_synth.atomic import check_writable, read_json, remove_stale_temp_files, same_json, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import MANIFEST_FILE, Manifest, SyntheticCase
from nnunet_synth.raw_dataset import (case_complete, case_files, check_new_dataset, file_dtype, nnunet_raw_root,
                                      write_case)

PARTS = ".synthesis_parts"
PARAMETERS = "parameters.json"


def output_folder(synth_id: int, name: str, real) -> Path:
    """``nnUNet_raw/DatasetXXX_name``; refuses an id nnU-Net cannot use or that another dataset already uses."""
    existing = check_new_dataset(synth_id, name, "-o")
    root = nnunet_raw_root()
    folder = root / f"Dataset{synth_id:03d}_{name}"
    if folder.resolve() == real.folder.resolve() or real.folder.resolve() in {p.resolve() for p in existing}:
        raise SynthError(f"-o {synth_id}: that is the real dataset {real.folder}")
    # The same name in nnUNet_preprocessed or nnUNet_results is this dataset, planned or trained earlier.
    others = [p for p in existing if p.name != folder.name]
    if others:
        raise SynthError(f"-o {synth_id}: dataset id {synth_id} is already used by {others[0]}; "
                         f"choose another -o id")
    check_writable(root, "nnUNet_raw=")
    return folder


def folder_state(folder: Path, identity: dict) -> str:
    """``new``, ``resume`` (same parameters, unfinished), ``complete`` (same parameters), or ``conflict``."""
    parts = folder / PARTS
    if not folder.exists() or _holds_nothing(folder):
        return "new"
    if (parts / PARAMETERS).is_file():
        return "resume" if same_json(read_json(parts / PARAMETERS), identity) else "conflict"
    if (folder / MANIFEST_FILE).is_file():
        manifest = Manifest.load(folder)
        record = manifest.generators.get(folder.name)
        if record is not None and same_json(identity, manifest_identity(manifest.real_dataset, record)):
            return "complete"
    return "conflict"


def manifest_identity(real_dataset: str, record) -> dict:
    return {"real_dataset": real_dataset, "generator": record.name, "model_hash": record.model_hash,
            "parameters": record.parameters}


def _holds_nothing(folder: Path) -> bool:
    """True for a folder a killed run created but wrote nothing into."""
    entries = list(folder.iterdir())
    return not entries or (len(entries) == 1 and entries[0].name == PARTS and not any(entries[0].iterdir()))


def holds_no_case(folder: Path) -> bool:
    """True when no case file and no case record has been written into ``folder`` (nothing to resume)."""
    if not folder.is_dir():
        return False
    records = [p for p in (folder / PARTS).glob("*.json") if p.name != PARAMETERS]
    files = [p for sub in ("imagesTr", "labelsTr") if (folder / sub).is_dir() for p in (folder / sub).iterdir()]
    return not records and not files and not (folder / MANIFEST_FILE).exists()


def prepare(folder: Path, identity: dict, state: str) -> None:
    """Main process only: make the folder ready for writing (``new`` or ``resume``)."""
    parts = folder / PARTS
    parts.mkdir(parents=True, exist_ok=True)
    if state == "new":
        write_json_atomic(parts / PARAMETERS, identity, sort_keys=True)
    for sub in (folder / "imagesTr", folder / "labelsTr", parts):
        remove_stale_temp_files(sub)


def record_path(folder: Path, case_id: str) -> Path:
    return folder / PARTS / f"{case_id}.json"


def is_done(folder: Path, case_id: str, num_channels: int, file_ending: str) -> bool:
    # The record is written after the files, so both together mean a finished case.
    return record_path(folder, case_id).is_file() and case_complete(folder, case_id, num_channels, file_ending)


def write_case_files(folder: Path, case_id: str, images, seg, source, real, process_index: int) -> None:
    """Write one case with the source's geometry and dtype, via this process's staging folder."""
    staging = folder / PARTS / f"staging-{process_index}"
    if staging.exists():
        shutil.rmtree(staging)  # leftovers of a killed run; the case is rewritten from scratch
    write_case(staging, case_id, source.restore_layout(images), source.restore_layout(seg[None])[0],
               source.properties, real.file_ending, real.source_dtype(source.case_id),
               file_dtype(real.label_file(source.case_id)))
    for staged, final in zip(case_files(staging, case_id, images.shape[0], real.file_ending),
                             case_files(folder, case_id, images.shape[0], real.file_ending)):
        final.parent.mkdir(exist_ok=True)
        os.replace(staged, final)
    shutil.rmtree(staging)


def finish(folder: Path, real, case_ids: list[str], generator_record) -> None:
    """Main process, after every shard is done: dataset.json, synthesis.json, then drop the parts."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    parts = folder / PARTS
    missing = [c for c in case_ids if not record_path(folder, c).is_file()]
    if missing:
        raise RuntimeError(f"{folder}: {len(missing)} case(s) were not generated (first: {missing[0]}); "
                           f"rerun the same command to resume")
    cases = {c: SyntheticCase(**read_json(record_path(folder, c))) for c in case_ids}
    # nnU-Net's writer is not atomic: write into the parts folder, then rename.
    scratch = parts / "dataset_json"
    scratch.mkdir(exist_ok=True)
    optional = {k: real.dataset_json[k] for k in ("regions_class_order", "overwrite_image_reader_writer")
                if k in real.dataset_json}
    if "licence" in real.dataset_json:  # synthetic images derive from the real ones, so their licence applies
        optional["license"] = real.dataset_json["licence"]
    generate_dataset_json(str(scratch), real.dataset_json["channel_names"], real.labels, len(case_ids),
                          real.file_ending, dataset_name=folder.name,
                          description=f"synthetic cases derived from {real.name}; provenance in synthesis.json",
                          **optional)
    os.replace(scratch / "dataset.json", folder / "dataset.json")
    Manifest(real.name, {folder.name: generator_record}, cases).save(folder)
    shutil.rmtree(parts)
