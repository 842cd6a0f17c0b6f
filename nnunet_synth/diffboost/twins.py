"""Preprocess synthetic twins with the real dataset's plans, voxel-aligned with the real cases.

Each twin goes through the steps of nnU-Net's ``DefaultPreprocessor`` with the
real case's own geometry: the plans' transpose, the real case's crop box
(recomputed from the real raw case with nnU-Net's ``crop_to_nonzero`` and
checked against the box stored in the real preprocessed case), the plan's
normalization (the configured preprocessor's ``_normalize``, masked by the real
case's non-zero region), and resampling to exactly the real preprocessed
shape. Twins are written with the real case's blosc2 chunking, so the trainer
decompresses only the chunks its crop box touches.

The synthetic dataset's ``synthesis.json`` is copied beside ``twins.json``
(which records its hash), so training reads leakage information from the
preprocessed folder alone. The whole set is built in a temporary folder and
renamed into place at the end: a failed run changes nothing, and nnU-Net never
sees a twin as a case.
"""
from __future__ import annotations

import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import blosc2
import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice
from batchgenerators.utilities.file_and_folder_operations import load_json, load_pickle
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from tqdm import tqdm

from nnunet_synth.diffboost.store import TwinManifest, plans_fingerprint, refuse_cascaded, twin_folder
from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import MANIFEST_FILE, Manifest, file_hash, manifest_hash
from nnunet_synth.raw_dataset import (RawDataset, check_finite, check_same_geometry, find_raw_dataset,
                                      nnunet_preprocessed_root, read_with)


@dataclass
class CaseJob:
    """Everything one worker needs to preprocess the twins of one real case (picklable)."""
    case: str
    plans_file: str
    configuration: str
    dataset_json: dict
    real_images: list[str]
    real_label: str
    real_preprocessed: str           # <folder>/<case> without ending
    twins: dict[str, tuple[list[str], str]]   # twin id -> (image files, label file)
    output_folder: str


def preprocess_case(job: CaseJob) -> list[str]:
    """Write ``{twin}.b2nd`` for every twin of ``job.case``; returns the twin ids."""
    pm = PlansManager(job.plans_file)
    cm = pm.get_configuration(job.configuration)
    rw = pm.image_reader_writer_class()
    real_data, real_props = read_with(rw.read_images, job.real_images)
    real_seg, _ = read_with(rw.read_seg, job.real_label)

    stored = load_pickle(job.real_preprocessed + ".pkl")
    real_array = blosc2.open(urlpath=job.real_preprocessed + ".b2nd", mode="r")
    axes = [0, *[i + 1 for i in pm.transpose_forward]]
    _, seg_cropped, bbox = crop_to_nonzero(real_data.transpose(axes), real_seg.transpose(axes).copy())
    if [list(map(int, b)) for b in bbox] != [list(map(int, b)) for b in stored["bbox_used_for_cropping"]]:
        raise SynthError(f"{job.real_preprocessed}.pkl: crop box differs from the one recomputed from the raw case "
                         f"'{job.case}'; the raw dataset changed after preprocessing, rerun nnUNetv2_preprocess")
    slicer = (slice(None),) + bounding_box_to_slice(bbox)
    original_spacing = [real_props["spacing"][i] for i in pm.transpose_forward]
    target_spacing = list(cm.spacing)
    if len(target_spacing) < len(original_spacing):
        # 2d configuration of a 3d dataset: the slice axis keeps its spacing (as in DefaultPreprocessor).
        target_spacing = [original_spacing[0]] + target_spacing
    preprocessor = cm.preprocessor_class(verbose=False)

    for twin_id, (images, label) in job.twins.items():
        data, props = read_with(rw.read_images, images)
        seg, _ = read_with(rw.read_seg, label)
        if seg.shape != real_seg.shape or not np.array_equal(seg, real_seg):
            raise SynthError(f"{label}: the mask of twin '{twin_id}' differs from the label of real case "
                             f"'{job.case}'; a twin must keep its source case's mask")
        if data.shape != real_data.shape:
            raise SynthError(f"{images[0]}: twin '{twin_id}' has shape {data.shape}, real case '{job.case}' "
                             f"has {real_data.shape}")
        check_same_geometry(props, real_props, images[0], job.real_images[0])
        check_finite(data, images, twin_id)
        x = np.ascontiguousarray(data.astype(np.float32).transpose(axes)[slicer])
        x = preprocessor._normalize(x, seg_cropped, cm, pm.foreground_intensity_properties_per_channel)
        x = cm.resampling_fn_data(x, real_array.shape[1:], original_spacing, target_spacing)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape != real_array.shape:
            raise SynthError(f"twin '{twin_id}': preprocessed shape {x.shape} differs from real case "
                             f"'{job.case}' {real_array.shape}")
        chunks, blocks = tuple(real_array.chunks), tuple(real_array.blocks)
        codec, clevel = blosc2.Codec.LZ4HC, 5
        filters = [nnUNetDatasetBlosc2._select_filter(x, blocks, chunks, codec, clevel)]
        blosc2.asarray(x, urlpath=str(Path(job.output_folder) / f"{twin_id}.b2nd"), chunks=chunks, blocks=blocks,
                       cparams={"codec": codec, "clevel": clevel, "filters": filters, "nthreads": 1})
    return list(job.twins)


def plan_jobs(real: str, synthetic: str, configuration: str, plans_identifier: str = "nnUNetPlans",
              allow_real_only: bool = False):
    """Check the inputs and list the work: (jobs, twin manifest without files, configuration folder)."""
    real_raw, synth_raw = RawDataset.open(real), RawDataset.open(synthetic)
    manifest = Manifest.load(synth_raw.folder)
    if manifest.real_dataset != real_raw.name:
        raise SynthError(f"{synth_raw.folder}/synthesis.json: derived from {manifest.real_dataset}, not {real_raw.name}")
    if synth_raw.file_ending != real_raw.file_ending or synth_raw.num_channels != real_raw.num_channels:
        raise SynthError(f"{synth_raw.folder}/dataset.json: {synth_raw.num_channels} channel(s) of "
                         f"'{synth_raw.file_ending}' files, but {real_raw.name} has {real_raw.num_channels} of "
                         f"'{real_raw.file_ending}'")

    base = nnunet_preprocessed_root() / real_raw.name
    plans_file = base / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise SynthError(f"{plans_file}: missing; run nnUNetv2_plan_and_preprocess -d {real_raw.name} first")
    pm = PlansManager(str(plans_file))
    if configuration not in pm.available_configurations:
        raise SynthError(f"{plans_file}: no configuration '{configuration}' "
                         f"(available: {', '.join(pm.available_configurations)})")
    cm = pm.get_configuration(configuration)
    refuse_cascaded(cm, configuration, str(plans_file))
    folder = base / cm.data_identifier
    real_cases = sorted(nnUNetDatasetBlosc2.get_identifiers(str(folder))) if folder.is_dir() else []
    if not real_cases:
        raise SynthError(f"{folder}: no preprocessed cases; run nnUNetv2_preprocess -d {real_raw.name} "
                         f"-c {configuration} -plans_name {plans_identifier} first")

    twins = {case: ids for case, ids in manifest.twins_by_source().items()}
    unknown_sources = sorted(set(twins) - set(real_cases))
    if unknown_sources:
        raise SynthError(f"{synth_raw.folder}/synthesis.json: twins of case(s) that are not preprocessed cases of "
                         f"{real_raw.name}: {', '.join(unknown_sources[:5])}")
    synth_cases = set(synth_raw.case_ids())
    absent = sorted(t for ids in twins.values() for t in ids if t not in synth_cases)
    if absent:
        raise SynthError(f"{synth_raw.folder}: twin(s) listed in synthesis.json have no files: {', '.join(absent[:5])}")
    without = [c for c in real_cases if c not in twins]
    if without and not allow_real_only:
        raise SynthError(f"{synth_raw.folder}: {len(without)} real case(s) have no kept twins "
                         f"({', '.join(without[:5])}); generate them, or pass --allow-real-only to train those "
                         f"cases unmixed")

    dataset_json = load_json(str(base / "dataset.json"))
    jobs = [CaseJob(case, str(plans_file), configuration, dataset_json, real_raw.image_files(case),
                    real_raw.label_file(case), str(folder / case),
                    {t: (synth_raw.image_files(t), synth_raw.label_file(t)) for t in twins[case]}, "")
            for case in real_cases if case in twins]
    tm = TwinManifest(real_raw.name, synth_raw.name, manifest_hash(synth_raw.folder), plans_identifier,
                      configuration, cm.data_identifier, plans_fingerprint(pm, cm),
                      {case: twins[case] for case in real_cases if case in twins}, without)
    return jobs, tm, folder


def preprocess_twins(real: str, synthetic: str, configuration: str, plans_identifier: str = "nnUNetPlans",
                     allow_real_only: bool = False, num_processes: int = 1, progress: bool = True) -> Path:
    """Preprocess every kept twin of ``synthetic`` for ``real``'s ``configuration``; returns the twin folder."""
    jobs, tm, folder = plan_jobs(real, synthetic, configuration, plans_identifier, allow_real_only)
    final = twin_folder(folder)
    staging = folder / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        source = find_raw_dataset(synthetic) / MANIFEST_FILE
        shutil.copyfile(source, staging / MANIFEST_FILE)
        if file_hash(staging / MANIFEST_FILE) != tm.synthesis_manifest_hash:
            raise SynthError(f"{source}: changed while the twins were being prepared; rerun nnunet-synth twins")
        for job in jobs:
            job.output_folder = str(staging)
        # A context manager: an error closes the bar first, so the message gets a line of its own.
        with tqdm(total=sum(len(j.twins) for j in jobs), desc="preprocessing twins", unit="twin",
                  disable=not progress) as bar:
            if num_processes > 1 and len(jobs) > 1:
                with ProcessPoolExecutor(num_processes, mp_context=get_context("spawn")) as pool:
                    for done in pool.map(preprocess_case, jobs):
                        bar.update(len(done))
            else:
                for job in jobs:
                    bar.update(len(preprocess_case(job)))
        tm.save(staging)
        _replace_folder(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return final


def _replace_folder(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; an old ``target`` is moved aside first and removed last."""
    old = None
    if target.exists():
        old = target.parent / f".tmp-old-{target.name}-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old)
