"""The checks of `nnunet-synth expand`: every input is read and checked before anything is written."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import MANIFEST_FILE, Manifest, merge_manifests
from nnunet_synth.raw_dataset import RawDataset, dataset_id_of


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
    return manifest


def output_folders(inputs: ExpansionInputs, roots: tuple[Path, Path], output_id: int, name: str | None,
                   overwrite: bool) -> tuple[str, list[Path]]:
    """(name of the new dataset, existing folders it replaces) after checking that the id may be used."""
    out_name = f"Dataset{output_id:03d}_{name or inputs.real.name.split('_', 1)[1] + 'Expanded'}"
    existing = sorted({p for root in roots if root.is_dir() for p in root.glob(f"Dataset{output_id:03d}_*")})
    if existing and not overwrite:
        raise SynthError(f"{existing[0]}: dataset id {output_id} already exists (use --overwrite to replace it)")
    inputs_resolved = {ds.folder.resolve() for ds in [inputs.real, *inputs.synthetic]}
    if inputs_resolved & {p.resolve() for p in existing}:
        raise SynthError(f"output id {output_id} is one of the input datasets")
    return out_name, existing
