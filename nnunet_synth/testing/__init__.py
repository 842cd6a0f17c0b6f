"""Tiny datasets and environments for tests, benchmarks and examples.

Everything here is small, seeded and written with nnU-Net's own writers, so a
test can plan, preprocess and train on it in seconds on a CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_synth.environment import trainer_folder


@dataclass
class NnunetFolders:
    raw: Path
    preprocessed: Path
    results: Path

    def env(self) -> dict[str, str]:
        """Variables for a subprocess that runs nnU-Net commands on these folders."""
        env = dict(os.environ)
        env.update(
            nnUNet_raw=str(self.raw),
            nnUNet_preprocessed=str(self.preprocessed),
            nnUNet_results=str(self.results),
            nnUNet_extTrainer=trainer_folder(),
            nnUNet_compile="false",
            # One augmentation worker: tiny runs spend longer starting workers
            # than augmenting. (0 would break planning: it sets torch threads.)
            nnUNet_n_proc_DA="1",
            # nnU-Net's default pools (validation export, planning) spawn 8
            # processes that each import torch: minutes on 2 cores.
            nnUNet_def_n_proc="1",
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
        )
        return env


def make_nnunet_folders(root: str | os.PathLike) -> NnunetFolders:
    root = Path(root)
    folders = NnunetFolders(root / "nnUNet_raw", root / "nnUNet_preprocessed", root / "nnUNet_results")
    for p in (folders.raw, folders.preprocessed, folders.results):
        p.mkdir(parents=True, exist_ok=True)
    return folders


def _disc_case(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A noisy background with one brighter ellipsoidal lesion (label 1)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=0).astype(np.float32)
    centre = np.array([rng.uniform(0.3 * s, 0.7 * s) for s in shape], dtype=np.float32)
    radii = np.array([rng.uniform(0.12 * s, 0.25 * s) for s in shape], dtype=np.float32)
    dist = np.sqrt((((grid - centre.reshape((-1,) + (1,) * len(shape))) / radii.reshape((-1,) + (1,) * len(shape))) ** 2).sum(0))
    seg = (dist <= 1).astype(np.uint8)
    img = rng.normal(80, 20, size=shape) + 90 * seg + 30 * np.sin(grid[-1] / 7.0)
    return img, seg


def make_raw_dataset_2d(raw_root: str | os.PathLike, dataset_id: int, name: str = "Tiny2D", n_cases: int = 8,
                        shape: tuple[int, int] = (64, 64), seed: int = 0, case_prefix: str = "case") -> Path:
    """A PNG dataset (NaturalImage2DIO), uint8 images, labels {0, 1}."""
    return _png_dataset(raw_root, dataset_id, name, n_cases, shape, seed, case_prefix, _disc_case)


def _png_dataset(raw_root, dataset_id: int, name: str, n_cases: int, shape, seed: int, case_prefix: str,
                 make_case) -> Path:
    """``n_cases`` of ``make_case(rng, shape) -> (image, seg)`` written as a PNG raw dataset."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    from skimage import io

    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        img, seg = make_case(rng, shape)
        case = f"{case_prefix}_{i:03d}"
        io.imsave(folder / "imagesTr" / f"{case}_0000.png", np.clip(img, 0, 255).astype(np.uint8), check_contrast=False)
        io.imsave(folder / "labelsTr" / f"{case}.png", seg, check_contrast=False)
    generate_dataset_json(str(folder), {0: "US"}, {"background": 0, "lesion": 1}, n_cases, ".png", dataset_name=folder.name)
    return folder


def _sector_case(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A convex-probe ultrasound look: a speckled fan on black, one brighter elliptical lesion inside it (label 1)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float32)
    apex_x, radius = shape[1] / 2, 0.95 * shape[0]
    fan = (np.hypot(yy, xx - apex_x) <= radius) & (np.abs(np.degrees(np.arctan2(xx - apex_x, yy))) <= 40)
    centre = (rng.uniform(0.45, 0.7) * shape[0], apex_x + rng.uniform(-0.12, 0.12) * shape[1])
    axes = (rng.uniform(0.07, 0.12) * shape[0], rng.uniform(0.07, 0.12) * shape[1])
    seg = ((((yy - centre[0]) / axes[0]) ** 2 + ((xx - centre[1]) / axes[1]) ** 2 <= 1) & fan).astype(np.uint8)
    tissue = rng.gamma(4.0, 20.0, size=shape) * (1 - 0.3 * yy / shape[0])
    img = np.where(fan, tissue + 70 * seg, 0)
    return img, seg


def make_sector_dataset_2d(raw_root: str | os.PathLike, dataset_id: int, name: str = "Sector2D", n_cases: int = 6,
                           shape: tuple[int, int] = (64, 80), seed: int = 0) -> Path:
    """A PNG dataset (NaturalImage2DIO) of ultrasound-like sector images on black; uint8, labels {0, 1}."""
    return _png_dataset(raw_root, dataset_id, name, n_cases, shape, seed, "case", _sector_case)


def make_raw_dataset_3d(raw_root: str | os.PathLike, dataset_id: int, name: str = "Tiny3D", n_cases: int = 6,
                        shape: tuple[int, int, int] = (20, 32, 32), spacing: tuple[float, float, float] = (2.5, 0.8, 0.8),
                        seed: int = 0, case_prefix: str = "case") -> Path:
    """A NIfTI dataset (SimpleITKIO) with anisotropic spacing, int16 images, labels {0, 1}.

    ``shape`` and ``spacing`` are in numpy (z, y, x) order.
    """
    import SimpleITK as sitk
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        img, seg = _disc_case(rng, shape)
        case = f"{case_prefix}_{i:03d}"
        for arr, path in ((img.astype(np.int16), folder / "imagesTr" / f"{case}_0000.nii.gz"),
                          (seg, folder / "labelsTr" / f"{case}.nii.gz")):
            itk = sitk.GetImageFromArray(arr)
            itk.SetSpacing(tuple(float(s) for s in spacing[::-1]))
            itk.SetOrigin((1.0, -2.0, 3.0))
            sitk.WriteImage(itk, str(path))
    generate_dataset_json(str(folder), {0: "CT"}, {"background": 0, "lesion": 1}, n_cases, ".nii.gz", dataset_name=folder.name)
    return folder


def make_standin_synthetic_dataset(real_folder: str | os.PathLike, raw_root: str | os.PathLike, dataset_id: int,
                                   k: int = 1, trained_on: list[str] | None = None, cases: list[str] | None = None,
                                   base_seed: int = 0, noise: float = 10.0, delay: float = 0.0) -> Path:
    """A synthetic dataset of twins made without a model: the real image plus seeded noise.

    It follows every contract of a real generator (case ids, per-sample seeds,
    atomic resumable writes, dataset.json and synthesis.json written last), so
    it stands in for one in tests of expansion, twins and resume. ``delay``
    (seconds per case) lets a test kill a run mid-way.
    """
    import time

    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    from nnunet_synth.manifest import (GeneratorRecord, Manifest, SyntheticCase, sample_seed, synthetic_case_id,
                                       training_cases_hash)
    from nnunet_synth.raw_dataset import RawDataset, case_complete, write_case

    real = RawDataset(real_folder)
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{real.name.split('_', 1)[1]}StandIn"
    manifest = Manifest(real.name)
    manifest.generators["standin"] = GeneratorRecord(
        name="standin-noise", version="1", model_folder="", model_hash="", trained_on=sorted(trained_on or []),
        parameters={"k": k, "base_seed": base_seed, "noise": noise},
        training_cases_hash=training_cases_hash(trained_on or []))
    for source in cases or real.case_ids():
        for i in range(k):
            case_id = synthetic_case_id(source, "twin", i)
            seed = sample_seed(base_seed, source, i)
            manifest.cases[case_id] = SyntheticCase("standin", source, "twin", seed)
            if case_complete(folder, case_id, real.num_channels, real.file_ending):
                continue
            images, seg, props = real.read_case(source)
            rng = np.random.default_rng(seed)
            write_case(folder, case_id, images + rng.normal(0, noise, images.shape), seg, props,
                       real.file_ending, real.source_dtype(source))
            time.sleep(delay)
    generate_dataset_json(str(folder), real.dataset_json["channel_names"], real.labels, len(manifest.cases),
                          real.file_ending, dataset_name=folder.name)
    manifest.save(folder)
    return folder
