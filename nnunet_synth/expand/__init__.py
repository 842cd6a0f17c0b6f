"""Build an expanded raw dataset: the real cases plus synthetic cases, with leakage-safe folds.

Example (real dataset 501 planned and preprocessed; 502 written by
`nnunet-synth generate` from a generator fitted on fold 0):

    nnunet-synth expand -d 501 -s 502 -o 503 --preprocess 2d
    nnUNetv2_train 503 2d 0 -tr nnUNetTrainerSynthExpand

What it does:
  * checks the real and synthetic datasets (files, shapes, spacings, labels) and
    each synthetic dataset's synthesis.json (every source case must be real);
  * writes DatasetNEW_<name>/dataset.json that references the real and
    synthetic files in place (nnU-Net's "dataset" key; nothing is copied),
    plus a merged synthesis.json and expansion.json;
  * copies the real dataset's plans and fingerprint (planning uses real cases
    only, so synthetic cases never change the fingerprint);
  * writes splits_final.json from the real dataset's folds: validation holds
    real cases only, and a synthetic case joins the training set of a fold only
    if its source case is trained on in that fold (--synthetic-only: training
    sets hold synthetic cases only);
  * reports folds whose validation cases a generator was trained on, and marks
    them refused (nnUNetTrainerSynthExpand will not train them) unless
    --allow-leakage is given.
Nothing is written when a check fails.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

EXPANSION_FILE = "expansion.json"


def _relative(path: str, start: Path) -> str:
    return os.path.relpath(path, start)


def expand(real: str | int, synthetic: list[str], output_id: int, name: str | None = None,
           plans: str = "nnUNetPlans", synthetic_only: bool = False, include_filtered: bool = False,
           allow_leakage: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Build the expanded dataset; returns its raw folder. See the module docstring."""
    from nnunet_synth.atomic import write_json_atomic
    from nnunet_synth.errors import SynthError
    from nnunet_synth.manifest import MANIFEST_FILE, Manifest, merge_manifests
    from nnunet_synth.raw_dataset import RawDataset, dataset_id_of, nnunet_preprocessed_root, nnunet_raw_root
    from nnunet_synth.splits import SPLITS_FILE, expanded_folds, leaked_folds, real_folds

    raw_root, pre_root = nnunet_raw_root(), nnunet_preprocessed_root()
    real_ds = RawDataset.open(real)
    real_ds.check(content=True, progress=progress)
    real_ids = real_ds.case_ids()

    real_pre = pre_root / real_ds.name
    for required in (f"{plans}.json", "dataset_fingerprint.json"):
        if not (real_pre / required).is_file():
            raise SynthError(f"{real_pre / required}: missing; plan the real dataset first "
                             f"(nnUNetv2_plan_and_preprocess -d {dataset_id_of(real_ds.name)}), so that planning uses real cases only")

    manifests, synth_sets = {}, []
    for s in synthetic:
        ds = RawDataset.open(s)
        if ds.name in manifests:
            raise SynthError(f"{ds.folder}: given twice with -s")
        manifest = Manifest.load(ds.folder)
        where = ds.folder / MANIFEST_FILE
        if manifest.real_dataset != real_ds.name:
            raise SynthError(f"{where}: derived from {manifest.real_dataset}, not from {real_ds.name}")
        manifest.check_sources(real_ids, where)
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
        manifests[ds.name] = manifest
        synth_sets.append(ds)

    merged = merge_manifests(real_ds.name, manifests)
    collisions = sorted(set(merged.cases) & set(real_ids))
    if collisions:
        raise SynthError(f"synthetic case id(s) {', '.join(collisions[:5])} are also real case ids of {real_ds.name}")
    selected = {k: c for k, c in merged.cases.items() if c.kept or include_filtered}
    merged.cases = selected
    if not selected:
        raise SynthError(f"no synthetic case to add (all {len(manifests)} dataset(s) are empty or filtered out)")

    # target folders
    out_name = f"Dataset{output_id:03d}_{name or real_ds.name.split('_', 1)[1] + 'Expanded'}"
    existing = sorted({p for root in (raw_root, pre_root) if root.is_dir()
                       for p in root.glob(f"Dataset{output_id:03d}_*")})
    if existing and not overwrite:
        raise SynthError(f"{existing[0]}: dataset id {output_id} already exists (use --overwrite to replace it)")
    if real_ds.folder.resolve() in [p.resolve() for p in existing] or \
            any(ds.folder.resolve() in [p.resolve() for p in existing] for ds in synth_sets):
        raise SynthError(f"output id {output_id} is one of the input datasets")

    folds, folds_origin = real_folds(real_ds.name, real_ids, pre_root)
    leaks = {gid: leaked_folds(folds, g.trained_on) for gid, g in merged.generators.items()}
    refused = sorted({f for per_gen in leaks.values() for f in per_gen})
    for gid, per_fold in leaks.items():
        for fold, cases in per_fold.items():
            print(f"leakage: generator '{gid}' was trained on {len(cases)} validation case(s) of fold {fold}"
                  f" ({', '.join(cases[:3])}{' ...' if len(cases) > 3 else ''})")
    if refused and not allow_leakage:
        if len(refused) == len(folds):
            raise SynthError(f"every fold ({len(folds)}) validates on cases a generator was trained on; "
                             f"fit the generator on one fold's training cases, or pass --allow-leakage")
        print(f"folds {refused} are refused: nnUNetTrainerSynthExpand will not train them "
              f"(rerun with --allow-leakage to allow them anyway)")

    sources = {k: c.source_case for k, c in selected.items()}
    splits = expanded_folds(folds, sources, synthetic_only=synthetic_only)

    # write raw and preprocessed folders under temporary names, then rename both
    raw_tmp, pre_tmp = raw_root / f".tmp-{out_name}", pre_root / f".tmp-{out_name}"
    for p in (raw_tmp, pre_tmp):
        if p.exists():
            shutil.rmtree(p)
        p.mkdir(parents=True)
    try:
        final_raw = raw_root / out_name
        files = {}
        for case in real_ids:
            files[case] = {"images": [_relative(f, final_raw) for f in real_ds.image_files(case)],
                           "label": _relative(real_ds.label_file(case), final_raw)}
        for ds in synth_sets:
            for case in ds.case_ids():
                if case in selected:
                    files[case] = {"images": [_relative(f, final_raw) for f in ds.image_files(case)],
                                   "label": _relative(ds.label_file(case), final_raw)}
        dataset_json = {k: v for k, v in real_ds.dataset_json.items() if k != "dataset"}
        dataset_json.update(numTraining=len(files), name=out_name, dataset=dict(sorted(files.items())),
                            description=f"{real_ds.name} plus {len(selected)} synthetic cases from "
                                        f"{', '.join(manifests)} (nnunet-synth expand)")
        expansion = {
            "real_dataset": real_ds.name,
            "synthetic_datasets": list(manifests),
            "real_cases": real_ids,
            "synthetic_cases": sorted(selected),
            "synthetic_only": synthetic_only,
            "include_filtered": include_filtered,
            "plans": plans,
            "folds_from": folds_origin,
            "leaky_folds": {gid: {str(f): c for f, c in per.items()} for gid, per in leaks.items() if per},
            "refused_folds": [] if allow_leakage else refused,
            "allow_leakage": allow_leakage,
        }
        write_json_atomic(raw_tmp / "dataset.json", dataset_json)
        merged.save(raw_tmp)
        write_json_atomic(raw_tmp / EXPANSION_FILE, expansion)

        real_plans = json.loads((real_pre / f"{plans}.json").read_text())
        real_plans["dataset_name"] = out_name
        write_json_atomic(pre_tmp / f"{plans}.json", real_plans)
        shutil.copy2(real_pre / "dataset_fingerprint.json", pre_tmp / "dataset_fingerprint.json")
        write_json_atomic(pre_tmp / "dataset.json", dataset_json)
        write_json_atomic(pre_tmp / SPLITS_FILE, splits)
        merged.save(pre_tmp)
        write_json_atomic(pre_tmp / EXPANSION_FILE, expansion)

        for p in existing:
            shutil.rmtree(p)
        os.replace(raw_tmp, final_raw)
        os.replace(pre_tmp, pre_root / out_name)
    finally:
        for p in (raw_tmp, pre_tmp):
            if p.exists():
                shutil.rmtree(p)
    print(f"wrote {final_raw}: {len(real_ids)} real + {len(selected)} synthetic cases, "
          f"{len(splits)} folds ({folds_origin})")
    return final_raw
