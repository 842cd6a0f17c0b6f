"""The conditioning map of the DiffBoost ControlNet: image edges plus the lesion mask's boundary.

The map is computed at model resolution, on the image framed exactly as the
model sees it (``sd.framing.full_frame``: padded to a square, never
stretched), in the same way at fit and at generate time: the rule is recorded
in the model folder's config.json and read back.

* ``canny`` (default): ``skimage.feature.canny`` with Gaussian ``sigma``
  (pixels) on the grayscale image in [0, 1]; binary.
* ``sobel``: ``skimage.filters.sobel`` of the Gaussian-smoothed image, scaled
  so that its 99th percentile is 1 and clipped; soft edges.
* ``hed``: controlnet_aux's ``HEDdetector`` from a local weights folder.

The lesion's boundary (``skimage.segmentation.find_boundaries``, ``mode="inner"``,
every label) is added at full strength, so the twin's lesion follows the mask.
The result is 3 equal channels in [0, 1] (diffusers' ControlNet convention).
"""
from __future__ import annotations

import numpy as np

from nnunet_synth.errors import SynthError


def edge_rule(edge: str, sigma: float, hed_model: str | None) -> dict:
    """The rule as recorded in config.json."""
    if edge == "hed" and not hed_model:
        raise SynthError("--edge hed needs --hed-model DIR, a local folder with the HED annotator weights")
    if edge != "hed" and hed_model:
        raise SynthError(f"--hed-model is used with --edge hed only (got --edge {edge})")
    if sigma <= 0 and edge != "hed":
        raise SynthError(f"--edge-sigma must be positive, got {sigma}")
    rule = {"edge": edge, "mask_boundary": "skimage.segmentation.find_boundaries(mode='inner')"}
    if edge == "hed":
        rule["hed_model"] = str(hed_model)
    else:
        rule["sigma"] = float(sigma)
    return rule


class EdgeDetector:
    """``detector(rgb01 (3, R, R), mask (R, R)) -> (3, R, R)`` float32 in [0, 1], by a recorded rule."""

    def __init__(self, rule: dict):
        self.rule = rule
        self._hed = None
        if rule["edge"] == "hed":
            self._hed = _load_hed(rule["hed_model"])

    def __call__(self, rgb01: np.ndarray, mask: np.ndarray) -> np.ndarray:
        from skimage.segmentation import find_boundaries

        gray = np.asarray(rgb01, dtype=np.float64).mean(axis=0)
        edge = self.rule["edge"]
        if edge == "canny":
            from skimage.feature import canny

            edges = canny(gray, sigma=self.rule["sigma"]).astype(np.float32)
        elif edge == "sobel":
            from skimage.filters import gaussian, sobel

            soft = sobel(gaussian(gray, sigma=self.rule["sigma"]))
            top = np.percentile(soft, 99)
            edges = np.clip(soft / top, 0, 1).astype(np.float32) if top > 0 else np.zeros_like(soft, np.float32)
        else:
            edges = self._hed_edges(rgb01)
        boundary = find_boundaries(np.asarray(mask), mode="inner")
        out = np.maximum(edges, boundary.astype(np.float32))
        return np.repeat(out[None], 3, axis=0)

    def _hed_edges(self, rgb01: np.ndarray) -> np.ndarray:
        from PIL import Image

        side = rgb01.shape[-1]
        pixels = (np.moveaxis(np.clip(rgb01, 0, 1), 0, -1) * 255).round().astype(np.uint8)
        result = self._hed(Image.fromarray(pixels), detect_resolution=side, image_resolution=side)
        gray = np.asarray(result.convert("L").resize((side, side)), dtype=np.float32) / 255.0
        return gray


def _load_hed(folder: str):
    from pathlib import Path

    if not Path(folder).is_dir():
        raise SynthError(f"--hed-model {folder}: not a folder; download the HED annotator weights "
                         f"(e.g. `hf download lllyasviel/Annotators ControlNetHED.pth --local-dir DIR`)")
    try:
        from controlnet_aux import HEDdetector
    except ImportError:
        raise SynthError("--edge hed needs controlnet_aux: pip install controlnet_aux") from None
    return HEDdetector.from_pretrained(folder)
