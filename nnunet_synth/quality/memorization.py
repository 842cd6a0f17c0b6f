"""Memorization: the most similar real training case of every synthetic case.

Default similarity: the normalised cross-correlation (NCC, Pearson's r of the
voxel values) of the first channel, resampled to a fixed small grid
(``grid_shape``), so that cases of any size compare and one matrix product
gives every pair. ``--dinov2 DIR`` uses the cosine similarity of DINOv2
features (``pooler_output``) of a local transformers model instead; nothing is
downloaded. A synthetic case whose best similarity reaches the threshold is a
near-copy. Edge case: a constant image has no NCC; it scores 0 against every
case (it copies nothing).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from nnunet_synth.errors import SynthError

GRID_2D = (64, 64)
GRID_3D = (32, 32, 32)


def reduced(image: np.ndarray) -> np.ndarray:
    """One channel of an nnU-Net array ((z,) y, x; a 2D case has z = 1) on the fixed NCC grid, as float32."""
    spatial = np.squeeze(np.asarray(image, dtype=np.float32))
    if spatial.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D image, got shape {np.shape(image)}")
    grid = GRID_2D if spatial.ndim == 2 else GRID_3D
    zoom = [g / s for g, s in zip(grid, spatial.shape)]
    out = ndimage.zoom(spatial, zoom, order=1, grid_mode=True, mode="nearest")
    if out.shape != grid:  # rounding in zoom: cut or pad the last voxel
        out = np.pad(out, [(0, max(0, g - s)) for g, s in zip(grid, out.shape)], mode="edge")
        out = out[tuple(slice(0, g) for g in grid)]
    return out


def _unit_rows(vectors: np.ndarray, centre: bool) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
    if centre:
        x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def ncc_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NCC of every row of ``a`` with every row of ``b`` (rows are flattened images of equal size)."""
    return _unit_rows(a, centre=True) @ _unit_rows(b, centre=True).T


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _unit_rows(a, centre=False) @ _unit_rows(b, centre=False).T


def nearest(similarity: np.ndarray, reference_ids: list[str]) -> tuple[list[str], np.ndarray]:
    """(most similar reference per row, its similarity); ties go to the first reference id."""
    if similarity.shape[1] == 0:
        raise ValueError("no reference cases to compare with")
    best = np.argmax(similarity, axis=1)
    return [reference_ids[i] for i in best], similarity[np.arange(len(best)), best]


class Dinov2Features:
    """DINOv2 ``pooler_output`` of a local model folder (``save_pretrained`` layout, no download)."""

    def __init__(self, folder, device):
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise SynthError(f"--dinov2 {folder}: no config.json; give a local DINOv2 folder "
                             f"(e.g. facebook/dinov2-small downloaded with save_pretrained)")
        if not (folder / "preprocessor_config.json").is_file():
            raise SynthError(f"--dinov2 {folder}: no preprocessor_config.json (DINOv2's image processor); "
                             f"save the model's AutoImageProcessor into the same folder")
        import torch
        from transformers import AutoImageProcessor, Dinov2Model

        try:
            self.model = Dinov2Model.from_pretrained(folder, local_files_only=True).to(device).eval()
            self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as e:
            raise SynthError(f"--dinov2 {folder}: cannot load a DINOv2 model ({str(e).splitlines()[0]})") from None
        self.device = device
        self._torch = torch

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Features of one case: the middle slice of a 3D case, as an 8-bit RGB image."""
        spatial = np.squeeze(np.asarray(image, dtype=np.float32))
        if spatial.ndim == 3:
            spatial = spatial[spatial.shape[0] // 2]
        lo, hi = np.percentile(spatial, (0.5, 99.5))
        grey = np.clip((spatial - lo) / (hi - lo) if hi > lo else spatial * 0, 0, 1)
        rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1)
        inputs = self.processor(images=rgb, return_tensors="pt").to(self.device)
        with self._torch.inference_mode():
            return self.model(**inputs).pooler_output[0].float().cpu().numpy().astype(np.float64)
