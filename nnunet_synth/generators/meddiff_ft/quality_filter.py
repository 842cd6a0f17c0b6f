"""The quality filter: DINOv2 features, a band of cosine similarities, and its report.

A generated lesion window is compared with the real lesion windows of the
training set (stored in the model folder at fit time); its similarity is the
cosine similarity of DINOv2 features (``pooler_output``: the normalised CLS
token) to the nearest real window. It is kept iff ``low <= s <= high``: above
``high`` it is a copy of a training lesion, below ``low`` a failure.

The band is calibrated from the real-to-real spread: each real window's
similarity to its nearest real window of another case (of another window
when there is one case only); ``low`` and ``high`` are two percentiles of
those values (5 and 95 by default). It can also be given.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnunet_synth.errors import SynthError

REPORT_FOLDER = "meddiff_filter"
REPORT_FILE = "filter_report.json"
HISTOGRAM_FILE = "similarity_histogram.png"


def load_dinov2(model_dir: str, device: str = "cpu"):
    """(Dinov2Model, its image processor) from a local folder; one-line errors for anything else."""
    from transformers import AutoConfig, AutoImageProcessor, Dinov2Model

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise SynthError(f"--filter-model {path}: no config.json; expected a local DINOv2 folder (transformers "
                         f"layout, e.g. `huggingface-cli download facebook/dinov2-small --local-dir DIR`)")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise SynthError(f"--filter-model {path}: config.json is not a transformers model config ({e})") from None
    if config.model_type != "dinov2":
        raise SynthError(f"--filter-model {path} holds a {config.model_type!r} model, not a DINOv2 model "
                         f"(model_type 'dinov2')")
    try:
        model = Dinov2Model.from_pretrained(str(path), local_files_only=True).to(device).eval()
        processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise SynthError(f"--filter-model {path}: cannot load the DINOv2 model or its image processor "
                         f"({str(e).splitlines()[0]})") from None
    return model, processor


def features(model, processor, windows: np.ndarray) -> np.ndarray:
    """(N, D) unit-length DINOv2 features of uint8 RGB windows (N, 3, S, S)."""
    import torch

    images = [np.moveaxis(w, 0, -1) for w in windows]
    inputs = processor(images=images, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"].to(model.device, model.dtype)).pooler_output
    out = out.float().cpu().numpy()
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def nearest_real(feature: np.ndarray, real: np.ndarray) -> tuple[float, int]:
    """(similarity to the nearest real feature, its index)."""
    similarities = real @ feature
    index = int(np.argmax(similarities))
    return float(similarities[index]), index


def real_to_real(real: np.ndarray, case_ids) -> np.ndarray:
    """Each real window's similarity to its nearest real window of another case (another window if one case)."""
    if len(real) < 2:
        raise SynthError("the filter's band needs at least 2 real lesion windows to calibrate; give --filter-band")
    case_ids = np.asarray(case_ids)
    similarities = real @ real.T
    np.fill_diagonal(similarities, -np.inf)
    if len(set(case_ids.tolist())) > 1:
        similarities[case_ids[:, None] == case_ids[None, :]] = -np.inf
    return similarities.max(axis=1)


def check_band(band) -> tuple[float, float]:
    if len(band) != 2:
        raise SynthError(f"--filter-band takes two values, low and high; got {len(band)}")
    low, high = float(band[0]), float(band[1])
    if not low < high:
        raise SynthError(f"--filter-band {low} {high}: low must be below high")
    return low, high


def calibrate_band(values: np.ndarray, percentiles) -> tuple[float, float]:
    if len(percentiles) != 2 or not 0 <= percentiles[0] < percentiles[1] <= 100:
        raise SynthError(f"--filter-percentiles {' '.join(map(str, percentiles))}: give two percentiles "
                         f"0 <= low < high <= 100")
    low, high = np.percentile(values, percentiles)
    if not low < high:
        raise SynthError(f"the real-to-real similarities are all {low:.4f}: no band can be calibrated from them; "
                         f"give --filter-band")
    return float(low), float(high)


def keep(similarity: float, band: tuple[float, float]) -> bool:
    return band[0] <= similarity <= band[1]


def write_report(dataset_folder: Path, decisions: dict, band: tuple[float, float], calibration: dict) -> Path:
    """``meddiff_filter/``: the similarity histogram with the band (PNG) and the JSON report of every case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnunet_synth.atomic import atomic_path, write_json_atomic

    out = Path(dataset_folder) / REPORT_FOLDER
    out.mkdir(exist_ok=True)
    kept = sorted(c for c, d in decisions.items() if d["kept"])
    dropped = sorted(c for c, d in decisions.items() if not d["kept"])
    report = {"band": list(band), "calibration": calibration, "kept": kept, "dropped": dropped,
              "cases": {c: decisions[c] for c in sorted(decisions)}}
    write_json_atomic(out / REPORT_FILE, json.loads(json.dumps(report)))
    figure, axis = plt.subplots(figsize=(6, 4))
    generated = [d["similarity"] for d in decisions.values() if d.get("similarity") is not None]
    if calibration.get("real_to_real"):
        axis.hist(calibration["real_to_real"], bins=20, alpha=0.5, label="real to real")
    if generated:
        axis.hist(generated, bins=20, alpha=0.5, label="generated to nearest real")
    for value, name in zip(band, ("low", "high")):
        axis.axvline(value, color="k", linestyle="--")
        axis.annotate(f"{name} {value:.3f}", (value, 0), rotation=90, va="bottom")
    axis.set_xlabel("DINOv2 cosine similarity")
    axis.set_ylabel("count")
    axis.set_title(f"kept {len(kept)}, dropped {len(dropped)}")
    axis.legend()
    with atomic_path(out / HISTOGRAM_FILE) as tmp:
        figure.savefig(str(tmp), format="png", dpi=100)
    plt.close(figure)
    return out
