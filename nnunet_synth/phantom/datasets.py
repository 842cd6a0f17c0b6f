"""Write the phantom as nnU-Net raw datasets: a training set of scanner A, a test set per scanner.

Each dataset is built in a hidden ``.DatasetXXX_Name.partial`` folder (one
atomic write per file, so an interrupted run resumes there) and renamed into
place once ``dataset.json`` is written. A complete dataset with the same
parameters is skipped on rerun; one with other parameters is refused rather
than overwritten.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nnunet_synth.atomic import atomic_path, remove_stale_temp_files, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.raw_dataset import other_dataset_with_id
from nnunet_synth.phantom.scanners import SCANNERS

PHANTOM_VERSION = 1  # bump whenever the simulator writes other pixels for the same parameters
TRAIN_SCANNER = "A"
FILE_ENDING = ".nii.gz"
PARTIAL_PARAMS = "phantom_params.json"
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024


@dataclass(frozen=True)
class PhantomDataset:
    """One dataset to write: which scanner, which role, how many cases, from which seed."""
    dataset_id: int
    name: str
    scanner: str
    role: str            # "train" or "test"
    n_cases: int
    seed: int
    image_size: int | None

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"

    def case_id(self, i: int) -> str:
        return f"ph{self.scanner}_{i:04d}" if self.role == "train" else f"ph{self.scanner}_test_{i:04d}"

    def case_seed(self, i: int) -> np.random.SeedSequence:
        # Depends only on (seed, role, scanner, case index): a resumed run writes the same files.
        return np.random.SeedSequence([self.seed, ("train", "test").index(self.role),
                                       list(SCANNERS).index(self.scanner), i])

    def params(self) -> dict:
        """What the files depend on; stored in dataset.json to recognise a complete dataset on rerun."""
        # The stored keys keep their first names ("device"): renaming them would make every
        # existing phantom dataset look like one made with other parameters, and reruns refuse those.
        p = {"version": PHANTOM_VERSION, "device": self.scanner, "role": self.role, "n_cases": self.n_cases,
             "seed": self.seed, "image_size": self.image_size, "device_parameters": asdict(SCANNERS[self.scanner])}
        return json.loads(json.dumps(p))  # tuples -> lists, as they come back from the file


def plan_datasets(first_id: int, n_train: int, n_test: int, seed: int, image_size: int | None,
                  scanners) -> list[PhantomDataset]:
    """The datasets to write; ids are fixed per scanner (first_id + 1 + index in A, B, C)."""
    check_arguments(first_id, n_train, n_test, seed, image_size, scanners)
    plan = [PhantomDataset(first_id, f"Phantom{TRAIN_SCANNER}", TRAIN_SCANNER, "train", n_train, seed, image_size)]
    for i, name in enumerate(SCANNERS):
        if name in scanners:
            plan.append(PhantomDataset(first_id + 1 + i, f"PhantomTest{name}", name, "test", n_test, seed, image_size))
    return plan


def check_arguments(first_id, n_train, n_test, seed, image_size, scanners) -> None:
    last_id = first_id + len(SCANNERS)
    if not isinstance(first_id, int) or first_id < 1 or last_id > 999:
        raise SynthError(f"first id {first_id}: the phantom uses ids first..first+{len(SCANNERS)}, "
                         f"which must lie in 1..999 (nnU-Net's three-digit dataset ids)")
    for what, n in (("training", n_train), ("test", n_test)):
        if not isinstance(n, int) or n < 1:
            raise SynthError(f"number of {what} cases {n}: must be a whole number >= 1")
    if not isinstance(seed, int) or seed < 0:
        raise SynthError(f"seed {seed}: must be a whole number >= 0")
    if image_size is not None and (not isinstance(image_size, int)
                                   or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
        raise SynthError(f"image size {image_size}: must be a whole number of rows in "
                         f"{MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} (or left out for each scanner's own size)")
    unknown = [s for s in scanners if s not in SCANNERS]
    if unknown or not scanners or len(set(scanners)) != len(scanners):
        raise SynthError(f"scanners {','.join(scanners) or '(none)'}: give each of {', '.join(SCANNERS)} "
                         f"at most once, at least one")


def write_case(dataset: PhantomDataset, i: int, folder: str) -> str:
    """Simulate case ``i`` and write its image and label (each atomically). Module level: picklable."""
    import SimpleITK as sitk

    from nnunet_synth.phantom.bmode import simulate

    case = dataset.case_id(i)
    image, mask, (sy, sx) = simulate(dataset.scanner, np.random.default_rng(dataset.case_seed(i)), dataset.image_size)
    for array, path in ((image, Path(folder) / "imagesTr" / f"{case}_0000{FILE_ENDING}"),
                        (mask, Path(folder) / "labelsTr" / f"{case}{FILE_ENDING}")):
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing((float(sx), float(sy)))  # SimpleITK orders axes x (columns), y (rows)
        with atomic_path(path) as tmp:
            sitk.WriteImage(itk, str(tmp), True)
    return case


def case_done(folder: Path, case: str) -> bool:
    return (folder / "imagesTr" / f"{case}_0000{FILE_ENDING}").is_file() and \
        (folder / "labelsTr" / f"{case}{FILE_ENDING}").is_file()


def dataset_complete(raw_root: Path, dataset: PhantomDataset) -> bool:
    """True if the dataset is already complete; raises if its id or folder is taken by something else."""
    final = raw_root / dataset.folder_name
    clash = other_dataset_with_id(dataset.dataset_id, dataset.folder_name, raw_root)
    if clash is not None:
        raise SynthError(f"{clash}: dataset id {dataset.dataset_id} is taken; "
                         f"choose another --first-id for the phantom")
    if not final.exists():
        return False
    dataset_json = final / "dataset.json"
    try:
        content = json.loads(dataset_json.read_text())
    except (OSError, ValueError):
        content = None
    stored = content.get("phantom") if isinstance(content, dict) else None
    if stored is None:
        raise SynthError(f"{final}: exists and is not a phantom dataset; remove it or choose another --first-id")
    if stored != dataset.params():
        raise SynthError(f"{final}: holds a phantom made with other parameters (seed, size, count or version); "
                         f"remove it or choose another --first-id")
    missing = [dataset.case_id(i) for i in range(dataset.n_cases) if not case_done(final, dataset.case_id(i))]
    if missing:
        raise SynthError(f"{final}: case {missing[0]} is missing ({len(missing)} in all); remove the folder and rerun")
    return True


def write_dataset(raw_root: Path, dataset: PhantomDataset, pool=None, progress: bool = True) -> Path:
    """Write one dataset (skipped if complete); ``pool`` is an optional process pool for the cases."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    from tqdm import tqdm

    final = raw_root / dataset.folder_name
    if dataset_complete(raw_root, dataset):
        return final
    partial = raw_root / f".{dataset.folder_name}.partial"
    marker = partial / PARTIAL_PARAMS
    if partial.exists():
        try:
            same = json.loads(marker.read_text()) == dataset.params()
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(partial)  # our own unfinished folder from a run with other parameters
    for sub in ("imagesTr", "labelsTr"):
        (partial / sub).mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(partial / sub)
    write_json_atomic(marker, dataset.params())

    todo = [i for i in range(dataset.n_cases) if not case_done(partial, dataset.case_id(i))]
    bar = tqdm(total=len(todo), desc=dataset.folder_name, unit="case", disable=not progress)
    if pool is not None and len(todo) > 1:
        for _ in pool.map(write_case, [dataset] * len(todo), todo, [str(partial)] * len(todo)):
            bar.update()
    else:
        for i in todo:
            write_case(dataset, i, str(partial))
            bar.update()
    bar.close()

    scanner = SCANNERS[dataset.scanner]
    generate_dataset_json(
        str(partial), channel_names={0: "ultrasound"}, labels={"background": 0, "lesion": 1},
        num_training_cases=dataset.n_cases, file_ending=FILE_ENDING, dataset_name=dataset.folder_name,
        description=f"nnunet_synth ultrasound phantom, {dataset.role} set of scanner {scanner.name} "
                    f"({scanner.description}). Test sets keep their cases in imagesTr/labelsTr so that "
                    f"nnU-Net's tools accept them as datasets.",
        reference="nnunet_synth.phantom", release=str(PHANTOM_VERSION), license="CC0 (simulated data)",
        converted_by="nnunet-synth phantom", phantom=dataset.params())
    marker.unlink()
    os.rename(partial, final)
    return final


def make_phantom_datasets(raw_root: str | os.PathLike, first_id: int = 700, n_train: int = 60, n_test: int = 30,
                          seed: int = 0, image_size: int | None = None, scanners=tuple(SCANNERS),
                          workers: int = 1, progress: bool = True) -> dict[str, Path]:
    """Write the phantom datasets under ``raw_root``; returns ``{folder name: path}``.

    ``Dataset{first_id}_PhantomA`` holds ``n_train`` training cases of scanner A;
    ``Dataset{first_id + 1 + j}_PhantomTest{X}`` holds ``n_test`` cases of scanner
    X for each X in ``scanners`` (j is X's index in A, B, C). ``image_size`` sets
    the rows of every image (the field of view in mm stays); None keeps each
    scanner's own size. The same arguments always give byte-identical files.
    """
    plan = plan_datasets(first_id, n_train, n_test, seed, image_size, list(scanners))
    if not isinstance(workers, int) or workers < 1:
        raise SynthError(f"workers {workers}: must be a whole number >= 1")
    raw_root = Path(raw_root)
    if raw_root.exists() and not raw_root.is_dir():
        raise SynthError(f"{raw_root}: is a file; the phantom needs a folder (nnUNet_raw) to write datasets into")
    raw_root.mkdir(parents=True, exist_ok=True)
    todo = [d for d in plan if not dataset_complete(raw_root, d)]  # refuses before writing anything
    pool = None
    if workers > 1 and todo:
        from concurrent.futures import ProcessPoolExecutor

        # Imported first so that forked workers (Linux's default) inherit them and start at once.
        import SimpleITK  # noqa: F401

        import nnunet_synth.phantom.bmode  # noqa: F401
        pool = ProcessPoolExecutor(max_workers=workers)
    try:
        for d in todo:
            write_dataset(raw_root, d, pool, progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return {d.folder_name: raw_root / d.folder_name for d in plan}
