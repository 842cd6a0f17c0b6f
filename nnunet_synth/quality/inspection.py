"""``nnunet-synth inspect``: one pass over a synthetic dataset, its real dataset and (optionally) a baseline.

Python API::

    from nnunet_synth.quality.inspection import InspectSettings, inspect_dataset
    from nnunet_synth.quality.consistency import Band

    summary = inspect_dataset(InspectSettings("704", baseline="nnUNet_results/Dataset700_X/"
                                              "nnUNetTrainer__nnUNetPlans__2d", band=Band(0.5)))

Every case is read once. With a baseline, each synthetic image is preprocessed
once, predicted (consistency) and its encoder features taken (fidelity); real
cases get features only. Memorization compares every synthetic case with the
real cases its generator was trained on. With a band, each case's figures
and the decision go into ``synthesis.json`` (``extra["inspection"]``, and
``kept``); the report goes to ``inspect/`` in the synthetic dataset's folder.

Reruns: the decision of an earlier inspection is replaced only by a run with
the same baseline, fold, band and TTA setting (which gives the same
decision), or with ``overwrite``. Either way the case's ``kept`` is
recomputed from the value it had before the first inspection
(``kept_before``), so an earlier gate's ``kept: false`` is never lost.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import Manifest
from nnunet_synth.quality import fidelity, memorization
from nnunet_synth.quality.baseline import BaselineNetwork, generator_fold, open_baseline
from nnunet_synth.quality.consistency import Band, case_consistency
from nnunet_synth.raw_dataset import RawDataset, find_raw_dataset
from nnunet_synth.splits import real_folds

INSPECT_FOLDER = "inspect"


@dataclass(frozen=True)
class InspectSettings:
    synthetic: str                      # synthetic raw dataset: id, name or folder
    real: str | None = None             # its real dataset (default: synthesis.json's real_dataset)
    baseline: str | None = None         # nnU-Net results folder TRAINER__PLANS__CONFIGURATION
    band: Band | None = None            # --filter LOW[:HIGH]; needs a baseline
    fold: int | None = None             # default: the generator's fold
    use_mirroring: bool = True
    device: str = "auto"
    dinov2: str | None = None           # local DINOv2 folder for memorization
    copy_threshold: float = 0.95        # similarity at which a synthetic case is a near-copy
    n_examples: int = 4
    overwrite: bool = False
    progress: bool = True


@dataclass
class CaseView:
    """What the report shows of one case: one 2D slice of image, mask and prediction."""
    image: np.ndarray
    mask: np.ndarray
    prediction: np.ndarray | None = None


@dataclass
class Collected:
    """What one pass keeps per case: small arrays only, so thousands of cases fit in memory."""
    reduced: dict[str, np.ndarray] = field(default_factory=dict)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    dinov2: dict[str, np.ndarray] = field(default_factory=dict)
    inside: dict[str, np.ndarray] = field(default_factory=dict)
    outside: dict[str, np.ndarray] = field(default_factory=dict)
    consistency: dict[str, float] = field(default_factory=dict)
    shown_slice: dict[str, int] = field(default_factory=dict)      # z of the slice the report shows
    prediction: dict[str, tuple] = field(default_factory=dict)     # that slice of the prediction, bit-packed
    views: dict[str, CaseView] = field(default_factory=dict)       # filled for the cases the report shows


def _settings_check(s: InspectSettings) -> None:
    if s.band is not None and s.baseline is None:
        raise SynthError("--filter needs --baseline RESULTS_FOLDER: consistency is the baseline's Dice")
    if not 0.0 < s.copy_threshold <= 1.0:
        raise SynthError(f"--copy-threshold {s.copy_threshold}: expected a similarity in (0, 1]")
    if s.n_examples < 1:
        raise SynthError(f"--examples {s.n_examples}: show at least 1 case")


def _shown_slice(mask: np.ndarray) -> int:
    """The z with the most foreground (0 for 2D cases)."""
    return int(np.argmax((mask[0] > 0).reshape(mask.shape[1], -1).sum(axis=1)))


def _pack(plane: np.ndarray) -> tuple:
    return plane.shape, np.packbits(plane > 0)


def _unpack(packed: tuple) -> np.ndarray:
    shape, bits = packed
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)


def load_views(dataset: RawDataset, store: Collected, cases, index: dict[str, int] | None = None) -> None:
    """Read the shown slice of ``cases`` again (``index`` overrides the slice, e.g. a source's at its twin's z)."""
    for case in sorted(set(cases) - set(store.views)):
        images, seg, _ = dataset.read_case(case)
        z = min((index or {}).get(case, store.shown_slice.get(case, _shown_slice(seg))), images.shape[1] - 1)
        prediction = _unpack(store.prediction[case]) if case in store.prediction else None
        store.views[case] = CaseView(images[0, z], seg[0, z], prediction)


def _labels(real: RawDataset):
    lm = real.label_manager
    return lm.foreground_regions if lm.has_regions else lm.foreground_labels


def _collect(dataset: RawDataset, cases: list[str], network, dino, labels, with_prediction: bool,
             desc: str, progress: bool) -> Collected:
    out = Collected()
    for i, case in enumerate(tqdm(cases, desc=desc, unit="case", disable=not progress)):
        images, seg, props = dataset.read_case(case)
        out.reduced[case] = memorization.reduced(images[0])
        out.inside[case], out.outside[case] = fidelity.sample_intensities(images, seg, seed=i)
        out.shown_slice[case] = z = _shown_slice(seg)
        if network is not None:
            data, pp = network.preprocess(images, props)
            out.features[case] = network.features(data)
            if with_prediction:
                prediction = network.predict(data, pp)
                out.consistency[case] = case_consistency(prediction, seg[0], labels)
                out.prediction[case] = _pack(prediction[z])
        if dino is not None:
            out.dinov2[case] = dino(images[0])
    return out


def _similarity(query: Collected, reference: Collected, ref_ids: list[str], dinov2: bool):
    ids = list(query.reduced)
    if not ids:
        return {}, {}
    if dinov2:
        matrix = memorization.cosine_matrix(np.stack([query.dinov2[c] for c in ids]),
                                            np.stack([reference.dinov2[c] for c in ref_ids]))
    else:
        matrix = memorization.ncc_matrix(np.stack([query.reduced[c] for c in ids]),
                                         np.stack([reference.reduced[c] for c in ref_ids]))
    best, value = memorization.nearest(matrix, ref_ids)
    return dict(zip(ids, best)), {c: float(v) for c, v in zip(ids, value)}


def _fidelity_row(name: str, a: Collected, b: Collected, a_ids: list[str], b_ids: list[str]) -> dict:
    row = {"comparison": name, "n": len(a_ids), "n_reference": len(b_ids)}
    if a.features and b.features:
        row["frechet"] = fidelity.frechet_distance(np.stack([a.features[c] for c in a_ids]),
                                                   np.stack([b.features[c] for c in b_ids]))
    else:
        row["frechet"] = float("nan")
    for part, store_a, store_b in (("inside", a.inside, b.inside), ("outside", a.outside, b.outside)):
        row[f"wasserstein_{part}"] = fidelity.wasserstein(np.concatenate([store_a[c] for c in a_ids]),
                                                          np.concatenate([store_b[c] for c in b_ids]))
    return row


def check_previous(manifest: Manifest, decision: dict, where: Path, overwrite: bool) -> None:
    """Refuse to replace an earlier inspection's decisions that were made with other settings."""
    for case_id, c in sorted(manifest.cases.items()):
        before = c.extra.get("inspection")
        if before is None or overwrite:
            continue
        old = {k: before.get(k) for k in decision}
        if old != decision:
            raise SynthError(f"{where}: case '{case_id}' was inspected with {old}, not {decision}; "
                             f"rerun with --overwrite to replace those decisions")


def apply_decisions(manifest: Manifest, records: dict[str, dict], band: Band) -> int:
    """Write each case's figures and kept flag; returns how many cases the band dropped."""
    dropped = 0
    for case_id, record in records.items():
        c = manifest.cases[case_id]
        kept_before = c.extra.get("inspection", {}).get("kept_before", c.kept)
        in_band = band.contains(record["consistency"])
        dropped += not in_band
        c.extra = {**c.extra, "inspection": {**record, "kept_before": kept_before, "in_band": in_band}}
        c.kept = bool(kept_before and in_band)
    return dropped


def inspect_dataset(s: InspectSettings) -> dict:
    """Inspect the synthetic dataset, write the report (and, with a band, synthesis.json); returns the summary."""
    from nnunet_synth.evaluation.prediction import pick_device
    from nnunet_synth.quality.report import shown_cases, write_report

    _settings_check(s)
    synth_folder = find_raw_dataset(s.synthetic)
    manifest = Manifest.load(synth_folder)
    real = RawDataset.open(s.real if s.real is not None else manifest.real_dataset)
    if real.name != manifest.real_dataset:
        raise SynthError(f"{synth_folder / 'synthesis.json'}: derived from {manifest.real_dataset}, not from -d {real.name}")
    manifest.check_sources(real.case_ids(), synth_folder / "synthesis.json")
    synth = RawDataset(synth_folder)
    missing = sorted(set(manifest.cases) - set(synth.case_ids()))
    if missing:
        raise SynthError(f"{synth_folder}: synthesis.json lists case(s) without files: {', '.join(missing[:5])}")
    if not manifest.cases:
        raise SynthError(f"{synth_folder / 'synthesis.json'}: lists no synthetic cases")
    preprocessed = os.environ.get("nnUNet_preprocessed")
    folds, folds_source = real_folds(real.name, real.case_ids(), preprocessed)
    fold = s.fold if s.fold is not None else generator_fold(manifest)
    if fold is None:
        raise SynthError(f"{synth_folder / 'synthesis.json'}: no generator records a fold (model_fold); give --fold")
    if not 0 <= fold < len(folds):
        raise SynthError(f"--fold {fold}: the split of {real.name} ({folds_source}) has folds 0 to {len(folds) - 1}")
    synth_ids = sorted(manifest.cases)
    sources = {c.source_case for c in manifest.cases.values()}
    train_ids, val_ids = sorted(folds[fold]["train"]), sorted(folds[fold]["val"])
    reference_ids = sorted(manifest.trained_on()) or train_ids  # what the generator saw

    baseline = None
    decision = None
    if s.baseline is not None:
        baseline = open_baseline(s.baseline, real, fold, folds, folds_source, sources)
        if s.band is not None:
            decision = {"baseline": str(baseline.folder), "fold": fold, "band": [s.band.low, s.band.high],
                        "use_mirroring": s.use_mirroring}
            check_previous(manifest, decision, synth_folder / "synthesis.json", s.overwrite)

    device = pick_device(s.device) if s.device in ("auto", "cpu", "cuda") else _explicit_device(s.device)
    network = BaselineNetwork(baseline, device, s.use_mirroring) if baseline is not None else None
    dino = memorization.Dinov2Features(s.dinov2, device) if s.dinov2 else None
    labels = _labels(real)

    syn = _collect(synth, synth_ids, network, dino, labels, True, "inspect: synthetic", s.progress)
    real_ids = sorted(set(train_ids) | set(val_ids) | set(reference_ids))
    rea = _collect(real, real_ids, network, dino, labels, False, "inspect: real", s.progress)

    nearest_real, similarity = _similarity(syn, rea, reference_ids, dino is not None)
    val_query = Collected(reduced={c: rea.reduced[c] for c in val_ids if c not in reference_ids},
                          dinov2={c: rea.dinov2[c] for c in val_ids if c not in reference_ids and c in rea.dinov2})
    _, real_similarity = _similarity(val_query, rea, reference_ids, dino is not None)

    rows = [_fidelity_row("synthetic vs real validation", syn, rea, synth_ids, val_ids),
            _fidelity_row("real training vs real validation", rea, rea, train_ids, val_ids)]
    measure = "dinov2 cosine" if dino is not None else "NCC"
    per_case = []
    for case in synth_ids:
        c = manifest.cases[case]
        per_case.append({"case": case, "source_case": c.source_case, "kind": c.kind,
                         "consistency": syn.consistency.get(case, float("nan")),
                         "nearest_real": nearest_real[case], "similarity": similarity[case],
                         "near_copy": similarity[case] >= s.copy_threshold, "kept": c.kept})

    dropped = None
    if decision is not None:
        records = {r["case"]: {**decision, "consistency": round(r["consistency"], 6),
                               "nearest_real": r["nearest_real"], "similarity": round(r["similarity"], 6),
                               "similarity_measure": measure, "near_copy": bool(r["near_copy"])} for r in per_case}
        dropped = apply_decisions(manifest, records, s.band)
        manifest.save(synth_folder)
        for r in per_case:
            r["kept"] = manifest.cases[r["case"]].kept

    summary = {
        "synthetic_dataset": synth_folder.name, "real_dataset": real.name, "fold": fold, "folds": folds_source,
        "baseline": None if baseline is None else str(baseline.folder), "use_mirroring": s.use_mirroring,
        "band": None if s.band is None else [s.band.low, s.band.high], "dropped": dropped,
        "similarity_measure": measure, "copy_threshold": s.copy_threshold,
        "n_synthetic": len(synth_ids), "n_real_train": len(train_ids), "n_real_validation": len(val_ids),
        "real_training_cases": train_ids, "real_validation_cases": val_ids, "generator_trained_on": reference_ids,
        "n_kept": sum(r["kept"] for r in per_case),
        "near_copies": sum(r["near_copy"] for r in per_case),
        "real_validation_similarity": real_similarity,
        "baseline_validation_dice": None if baseline is None else baseline.validation_dice,
        "fidelity": rows, "cases": per_case,
    }
    shown = shown_cases(summary, s.n_examples)
    load_views(synth, syn, shown)
    load_views(real, rea, {manifest.cases[c].source_case for c in shown},
               index={manifest.cases[c].source_case: syn.shown_slice[c] for c in shown})
    load_views(real, rea, {r["nearest_real"] for r in per_case if r["case"] in shown})
    summary["report"] = str(write_report(synth_folder / INSPECT_FOLDER, summary, syn, rea, s.n_examples))
    return summary


def _explicit_device(text: str):
    import torch

    if text.startswith("cuda") and not torch.cuda.is_available():
        raise SynthError(f"--device {text}: no CUDA device is available; use --device cpu")
    try:
        return torch.device(text)
    except RuntimeError:
        raise SynthError(f"--device {text}: expected auto, cpu, cuda or cuda:N") from None
