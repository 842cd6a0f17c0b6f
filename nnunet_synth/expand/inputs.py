"""The checks of `nnunet-synth expand`: every input is read and checked before anything is written."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_synth.atomic import check_writable, read_json
from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import EXPANSION_FILE, MANIFEST_FILE, Manifest, merge_manifests
from nnunet_synth.raw_dataset import RawDataset, check_new_dataset, check_same_geometry, dataset_id_of, read_with


@dataclass
class ExpansionInputs:
    real: RawDataset
    real_preprocessed: Path          # holds the plans and fingerprint to copy
    synthetic: list[RawDataset]
    manifest: Manifest               # merged over the synthetic datasets, selected cases only

    @property
    def synthetic_names(self) -> list[str]:
        return [ds.name for ds in self.synthetic]


def read_inputs(real: str | int, synthetic: list[str], preprocessed_root: Path, plans: str,
                include_filtered: bool, progress: bool) -> ExpansionInputs:
    real_ds = RawDataset.open(real)
    real_ds.check(content=True, progress=progress)
    real_pre = preprocessed_root / real_ds.name
    for required in (f"{plans}.json", "dataset_fingerprint.json"):
        if not (real_pre / required).is_file():
            raise SynthError(f"{real_pre / required}: missing; plan the real dataset first "
                             f"(nnUNetv2_plan_and_preprocess -d {dataset_id_of(real_ds.name)}), so that planning uses real cases only")

    manifests, synth_sets = {}, []
    for s in synthetic:
        ds = RawDataset.open(s)
        if ds.name in manifests:
            raise SynthError(f"{ds.folder}: given twice with -s")
        manifests[ds.name] = _checked_manifest(ds, real_ds, progress)
        synth_sets.append(ds)

    merged = merge_manifests(real_ds.name, manifests)
    collisions = sorted(set(merged.cases) & set(real_ds.case_ids()))
    if collisions:
        raise SynthError(f"synthetic case id(s) {', '.join(collisions[:5])} are also real case ids of {real_ds.name}")
    merged.cases = {k: c for k, c in merged.cases.items() if c.kept or include_filtered}
    if not merged.cases:
        raise SynthError(f"no synthetic case to add (all {len(manifests)} dataset(s) are empty or filtered out)")
    return ExpansionInputs(real_ds, real_pre, synth_sets, merged)


def _checked_manifest(ds: RawDataset, real_ds: RawDataset, progress: bool) -> Manifest:
    """The synthesis.json of one synthetic dataset, after checking it against its files and the real dataset."""
    manifest = Manifest.load(ds.folder)
    where = ds.folder / MANIFEST_FILE
    if manifest.real_dataset != real_ds.name:
        raise SynthError(f"{where}: derived from {manifest.real_dataset}, not from {real_ds.name}")
    manifest.check_sources(real_ds.case_ids(), where)
    ds.check(content=True, progress=progress)
    on_disk, listed = set(ds.case_ids()), set(manifest.cases)
    if on_disk - listed:
        raise SynthError(f"{where}: does not list case(s) {', '.join(sorted(on_disk - listed)[:5])} of {ds.name}")
    if listed - on_disk:
        raise SynthError(f"{ds.folder}: case(s) {', '.join(sorted(listed - on_disk)[:5])} listed in "
                         f"{MANIFEST_FILE} have no files")
    if ds.dataset_json["channel_names"] != real_ds.dataset_json["channel_names"] or ds.labels != real_ds.labels:
        raise SynthError(f"{ds.folder / 'dataset.json'}: channel_names or labels differ from {real_ds.name}'s")
    if ds.file_ending != real_ds.file_ending:
        raise SynthError(f"{ds.folder / 'dataset.json'}: file ending {ds.file_ending} differs from "
                         f"{real_ds.name}'s {real_ds.file_ending}")
    _check_against_sources(ds, real_ds, manifest)
    return manifest


def _check_against_sources(ds: RawDataset, real_ds: RawDataset, manifest: Manifest) -> None:
    """Each synthetic label has its declared source's shape and geometry, and a twin its source's mask.

    The folds place a case by its declared source; a twin renamed to another
    source would put a validation case's mask into that fold's training set.
    """
    reader, real_reader = ds.reader_writer(), real_ds.reader_writer()
    sources: dict[str, tuple] = {}
    for case_id, case in sorted(manifest.cases.items(), key=lambda item: (item[1].source_case, item[0])):
        if case.source_case not in sources:
            sources.clear()  # sorted by source: one real label in memory at a time
            sources[case.source_case] = read_with(real_reader.read_seg, real_ds.label_file(case.source_case))
        source_seg, source_props = sources[case.source_case]
        label, source_label = ds.label_file(case_id), real_ds.label_file(case.source_case)
        seg, props = read_with(reader.read_seg, label)
        if seg.shape != source_seg.shape:
            raise SynthError(f"{label}: shape {seg.shape[1:]} differs from {source_label}'s {source_seg.shape[1:]}, "
                             f"the label of its declared source case '{case.source_case}'")
        check_same_geometry(props, source_props, label, source_label)
        if case.kind == "twin" and not np.array_equal(seg, source_seg):
            raise SynthError(f"{label}: the mask of twin '{case_id}' differs from {source_label}, the label of its "
                             f"declared source case '{case.source_case}'; a twin must keep its source's mask "
                             f"(were files renamed?)")


def check_configurations(inputs: ExpansionInputs, plans: str, configurations) -> None:
    """Every configuration to preprocess must be one of the real plans' (nnU-Net would only print "Skipping")."""
    if not configurations:
        return
    path = inputs.real_preprocessed / f"{plans}.json"
    plans_json = read_json(path)
    available = sorted(plans_json.get("configurations", {})) if isinstance(plans_json, dict) else []
    unknown = [c for c in configurations if c not in available]
    if unknown:
        raise SynthError(f"--preprocess {' '.join(unknown)}: not a configuration of {path} "
                         f"(available: {', '.join(available) or 'none'})")


def output_folders(inputs: ExpansionInputs, roots: tuple[Path, Path], output_id: int, name: str | None,
                   overwrite: bool) -> tuple[str, list[Path]]:
    """(name of the new dataset, existing folders it replaces) after checking that the id may be used."""
    out_name = f"Dataset{output_id:03d}_{name or inputs.real.name.split('_', 1)[1] + 'Expanded'}"
    in_use = check_new_dataset(output_id, out_name.split("_", 1)[1], "-o")
    inputs_resolved = {ds.folder.resolve() for ds in [inputs.real, *inputs.synthetic]}
    if inputs_resolved & {p.resolve() for p in in_use}:
        raise SynthError(f"-o {output_id}: that id is one of the input datasets")
    # --overwrite replaces an earlier expansion of this name (raw and preprocessed folders); any other dataset
    # with this id (a real one, trained results under another name) is never replaced.
    replaceable = {p for root in roots if root.is_dir() for p in root.glob(f"Dataset{output_id:03d}_*")
                   if p.name == out_name and (p / EXPANSION_FILE).is_file()}
    others = [p for p in in_use if p not in replaceable and p.name != out_name]
    others += [p for p in in_use if p.name == out_name and p.parent in roots and p not in replaceable]
    if others:
        raise SynthError(f"-o {output_id}: dataset id {output_id} is already used by {others[0]}, which "
                         f"`nnunet-synth expand` did not write; choose another -o id")
    existing = sorted(p for p in in_use if p in replaceable)
    if existing and not overwrite:
        raise SynthError(f"{existing[0]}: dataset id {output_id} already exists (use --overwrite to replace it)")
    for root, var in zip(roots, ("nnUNet_raw=", "nnUNet_preprocessed=")):
        check_writable(root, var)
    return out_name, existing
