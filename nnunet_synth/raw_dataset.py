"""Reading and writing nnU-Net raw datasets, on top of nnU-Net's own readers.

``RawDataset`` opens a raw dataset (by id, name or folder), lists its training
cases the way nnU-Net does (``imagesTr``/``labelsTr`` or the ``dataset`` key of
``dataset.json``), reads cases with the reader-writer nnU-Net would pick, and
checks the dataset with one-line errors that name the file at fault.

``write_case`` writes a synthetic case in the file ending, geometry and data
type of a source dataset, one atomic file at a time, so that a killed run
leaves only complete files and a rerun can skip complete cases.
"""
from __future__ import annotations

import json
import os
import re
from functools import cached_property
from pathlib import Path

import numpy as np

from nnunet_synth.atomic import atomic_path, read_json, remove_stale_temp_files
from nnunet_synth.errors import SynthError
from nnunet_synth.labels import check_label_values

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
_DATASET_NAME = re.compile(r"^Dataset(\d{3})_\S+$")


def nnunet_raw_root() -> Path:
    value = os.environ.get("nnUNet_raw")
    if not value:
        raise SynthError('nnUNet_raw is not set; run `nnunet-synth doctor` for the line that fixes it')
    return Path(value)


def nnunet_preprocessed_root() -> Path:
    value = os.environ.get("nnUNet_preprocessed")
    if not value:
        raise SynthError('nnUNet_preprocessed is not set; run `nnunet-synth doctor` for the line that fixes it')
    return Path(value)


def nnunet_roots() -> dict[str, Path]:
    """The nnU-Net folders that are set (raw, preprocessed, results), by variable name."""
    return {var: Path(os.environ[var]) for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
            if os.environ.get(var)}


def check_new_dataset(dataset_id, name: str, option: str = "-o") -> list[Path]:
    """Refuse a dataset id or name nnU-Net cannot live with; returns the existing folders of that id.

    Ids are 1 to 999 (``Dataset1000_X`` makes nnU-Net's lookup of id 100
    ambiguous). Every nnU-Net folder is searched: nnU-Net refuses an id that
    two names share in any of them. The caller decides whether the returned
    folders (the id already in use) may be replaced.
    """
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise SynthError(f"{option} {dataset_id}: nnU-Net dataset ids are 1 to 999")
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SynthError(f"--name {name!r}: a dataset name must be letters, digits, '_', '-' or '.' "
                         f"(no spaces or slashes)")
    return sorted(p for root in nnunet_roots().values() if root.is_dir()
                  for p in root.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir())


def other_dataset_with_id(dataset_id: int, folder_name: str, *roots: str | os.PathLike) -> Path | None:
    """A folder of ``dataset_id`` under another name than ``folder_name``, in ``roots`` or any nnU-Net folder set.

    nnU-Net refuses an id that two names share in any of its folders, so a
    command that writes ``folder_name`` must not start when this finds one.
    """
    for root in [Path(r) for r in roots] + list(nnunet_roots().values()):
        if root.is_dir():
            for p in sorted(root.glob(f"Dataset{int(dataset_id):03d}_*")):
                if p.is_dir() and p.name != folder_name:
                    return p
    return None


def dataset_id_of(name: str) -> int:
    m = _DATASET_NAME.match(name)
    if m is None:
        raise SynthError(f"'{name}' is not an nnU-Net dataset name (DatasetXXX_Name)")
    return int(m.group(1))


def find_raw_dataset(dataset: str | int | os.PathLike) -> Path:
    """The folder of a raw dataset given as an id (``901``), a name, or a path."""
    if isinstance(dataset, os.PathLike) or (isinstance(dataset, str) and os.sep in dataset):
        folder = Path(dataset)
        if not folder.is_dir():
            raise SynthError(f"{folder}: no such dataset folder")
        return folder
    root = nnunet_raw_root()
    text = str(dataset)
    if text.isdigit():
        prefix = f"Dataset{int(text):03d}_"
        matches = sorted(p for p in root.glob(prefix + "*") if p.is_dir()) if root.is_dir() else []
        if not matches:
            raise SynthError(f"dataset id {int(text)} does not exist in nnUNet_raw={root}")
        if len(matches) > 1:
            raise SynthError(f"dataset id {int(text)} is ambiguous in {root}: {', '.join(p.name for p in matches)}")
        return matches[0]
    folder = root / text
    if not folder.is_dir():
        raise SynthError(f"dataset {text} does not exist in nnUNet_raw={root}")
    return folder


def load_dataset_json(folder: Path) -> dict:
    path = folder / "dataset.json"
    dataset_json = read_json(path)
    if not isinstance(dataset_json, dict):
        raise SynthError(f"{path}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in dataset_json]
    if missing:
        raise SynthError(f"{path}: missing required key(s) {', '.join(missing)}")
    if not isinstance(dataset_json["labels"], dict) or "background" not in dataset_json["labels"]:
        raise SynthError(f"{path}: 'labels' must be an object with a 'background' entry")
    if not isinstance(dataset_json["channel_names"], dict) or not dataset_json["channel_names"]:
        raise SynthError(f"{path}: 'channel_names' must be a non-empty object")
    if not isinstance(dataset_json["file_ending"], str) or not dataset_json["file_ending"].startswith("."):
        raise SynthError(f"{path}: 'file_ending' must be a string such as '.nii.gz' or '.png'")
    return dataset_json


class RawDataset:
    """A raw nnU-Net dataset. Construct with ``RawDataset.open(id_or_name_or_folder)``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.dataset_json = load_dataset_json(self.folder)

    @classmethod
    def open(cls, dataset: str | int | os.PathLike) -> "RawDataset":
        return cls(find_raw_dataset(dataset))

    # -- description ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    @property
    def num_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    @property
    def labels(self) -> dict:
        return self.dataset_json["labels"]

    @cached_property
    def label_manager(self):
        from nnunetv2.utilities.label_handling.label_handling import LabelManager

        return LabelManager(self.labels, regions_class_order=self.dataset_json.get("regions_class_order"))

    def allowed_label_values(self) -> set[int]:
        """Every value a label file may hold (including background and the ignore label)."""
        lm = self.label_manager
        values = set(int(v) for v in lm.all_labels)
        if lm.has_ignore_label:
            values.add(int(lm.ignore_label))
        return values

    # -- cases ---------------------------------------------------------------------
    @cached_property
    def _files(self) -> dict[str, dict]:
        """case id -> {'images': [...], 'label': ...}, as nnU-Net itself lists them."""
        from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

        if "dataset" not in self.dataset_json:
            for sub in ("imagesTr", "labelsTr"):
                if not (self.folder / sub).is_dir():
                    raise SynthError(f"{self.folder / sub}: missing folder")
        files = get_filenames_of_train_images_and_targets(str(self.folder), json.loads(json.dumps(self.dataset_json)))
        if not files and "dataset" not in self.dataset_json:
            found = sorted({"".join(p.suffixes) for p in (self.folder / "imagesTr").iterdir()
                            if p.is_file() and not p.name.startswith(".")})
            if found:
                raise SynthError(f"{self.folder / 'dataset.json'}: no file in {self.folder / 'imagesTr'} ends with "
                                 f"the file_ending {self.file_ending!r} (found {', '.join(found)}); fix file_ending")
        return {str(k): v for k, v in sorted(files.items())}

    def case_ids(self) -> list[str]:
        return list(self._files)

    def image_files(self, case_id: str) -> list[str]:
        return list(self._files[case_id]["images"])

    def label_file(self, case_id: str) -> str:
        return self._files[case_id]["label"]

    def reader_writer(self):
        """nnU-Net's reader-writer for this dataset, chosen once (choosing it reads an example file)."""
        return self._reader_writer

    @cached_property
    def _reader_writer(self):
        from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

        example = self.image_files(self.case_ids()[0])[0] if self.case_ids() else None
        return determine_reader_writer_from_dataset_json(self.dataset_json, example, verbose=False)()

    def read_case(self, case_id: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """(images float32 (C, *spatial), seg (1, *spatial), properties) with nnU-Net's reader, after the
        content checks (``check_case``): finite intensities, the label's shape and geometry, declared labels."""
        rw, image_files, label = self.reader_writer(), self.image_files(case_id), self.label_file(case_id)
        images, props = read_with(rw.read_images, image_files)
        seg, seg_props = read_with(rw.read_seg, label)
        check_finite(images, image_files, case_id)
        if images.shape[1:] != seg.shape[1:]:
            raise SynthError(f"{label}: shape {seg.shape[1:]} differs from its image's {images.shape[1:]} "
                             f"({image_files[0]}, case '{case_id}')")
        check_same_geometry(seg_props, props, label, image_files[0])
        check_label_values(seg, self.allowed_label_values(), f"{label} (case '{case_id}')",
                           allowed_from=str(self.folder / "dataset.json"))
        return images, seg, props

    def source_dtype(self, case_id: str) -> np.dtype:
        """The data type stored in the case's first image file (readers return float32)."""
        return file_dtype(self.image_files(case_id)[0])

    # -- checks --------------------------------------------------------------------
    def check_files(self) -> None:
        """Structure only: counts, and an image for every label and a label for every image."""
        files = self._files
        json_path = self.folder / "dataset.json"
        if "dataset" not in self.dataset_json:
            ending = self.file_ending
            images_dir, labels_dir = self.folder / "imagesTr", self.folder / "labelsTr"
            label_ids = {p.name[: -len(ending)] for p in labels_dir.iterdir()
                         if p.name.endswith(ending) and not p.name.startswith(".")}
            for case in sorted(label_ids - set(files)):
                raise SynthError(f"{labels_dir / (case + ending)}: label without image "
                                 f"(expected {images_dir / (case + '_0000' + ending)})")
        for case, entry in files.items():
            for expected_channel, image in enumerate(entry["images"]):
                if not os.path.isfile(image):
                    raise SynthError(f"{image}: missing image file of case '{case}'")
            if len(entry["images"]) != self.num_channels:
                raise SynthError(f"case '{case}' in {self.folder}: {len(entry['images'])} image file(s), "
                                 f"but dataset.json declares {self.num_channels} channel(s)")
            if not os.path.isfile(entry["label"]):
                raise SynthError(f"{entry['images'][0]}: image without label (expected {entry['label']})")
        if len(files) != self.dataset_json["numTraining"]:
            raise SynthError(f"{json_path}: numTraining is {self.dataset_json['numTraining']}, "
                             f"but {len(files)} training cases were found")

    def check_case(self, case_id: str) -> None:
        """Content: readable files, finite intensities, matching shape and geometry, declared label values only."""
        self.read_case(case_id)

    def check(self, content: bool = True, progress: bool = False) -> None:
        """Raise SynthError at the first problem; ``content`` also reads every case."""
        self.check_files()
        if content:
            from tqdm import tqdm

            # closed by the with block on an error, so the error gets a line of its own
            with tqdm(self.case_ids(), desc=f"checking {self.name}", disable=not progress, unit="case") as bar:
                for case in bar:
                    self.check_case(case)


def check_finite(images: np.ndarray, files, case_id: str) -> None:
    """Refuse NaN or infinite intensities, naming the channel's file (min/max propagate NaN: no extra array)."""
    for channel, file in zip(images, files):
        low, high = np.min(channel), np.max(channel)
        if not (np.isfinite(low) and np.isfinite(high)):
            bad = int(np.count_nonzero(~np.isfinite(channel)))
            raise SynthError(f"{file}: {bad} voxel(s) are NaN or infinite (case '{case_id}'); "
                             f"fix or remove the case")


def _geometry(props: dict) -> dict:
    geometry = {"spacing": tuple(float(v) for v in props["spacing"])}
    sitk_stuff = props.get("sitk_stuff")
    if sitk_stuff is not None:
        geometry["origin"] = tuple(float(v) for v in sitk_stuff["origin"])
        geometry["direction"] = tuple(float(v) for v in sitk_stuff["direction"])
    return geometry


def check_same_geometry(props: dict, other_props: dict, file, other_file) -> None:
    """The one geometry check: ``file`` must have the spacing, origin and direction of ``other_file``.

    ``props`` are nnU-Net reader properties (``spacing``, and ``sitk_stuff`` for
    SimpleITK formats); formats without an origin compare spacing only.
    """
    mine, theirs = _geometry(props), _geometry(other_props)
    tolerance = {"spacing": dict(rtol=1e-4, atol=0), "origin": dict(rtol=0, atol=1e-3),
                 "direction": dict(rtol=0, atol=1e-4)}
    for key in ("spacing", "origin", "direction"):
        if key in mine and key in theirs and (len(mine[key]) != len(theirs[key])
                                              or not np.allclose(mine[key], theirs[key], **tolerance[key])):
            raise SynthError(f"{file}: {key} {mine[key]} differs from {other_file}'s {theirs[key]}")


def read_with(fn, files):
    """Call an nnU-Net reader (``rw.read_images`` or ``rw.read_seg``); a failure becomes a one-line SynthError."""
    try:
        return fn(files if isinstance(files, str) else tuple(files))
    except SynthError:
        raise
    except Exception as e:  # readers raise many types for truncated or corrupt files
        shown = files if isinstance(files, str) else files[0]
        raise SynthError(f"{shown}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'corrupt file'})") from None


def file_dtype(path: str | os.PathLike) -> np.dtype:
    path = str(path)
    lower = path.lower()
    try:
        if lower.endswith((".png", ".bmp", ".tif", ".tiff")):
            from PIL import Image

            with Image.open(path) as im:
                mode = im.mode
            return np.dtype({"1": np.uint8, "L": np.uint8, "P": np.uint8, "RGB": np.uint8, "RGBA": np.uint8,
                             "I;16": np.uint16, "I;16B": np.uint16, "I": np.int32, "F": np.float32}[mode])
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        return np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1] * reader.GetDimension(), reader.GetPixelID())).dtype)
    except KeyError as e:
        raise SynthError(f"{path}: unsupported image mode {e}") from None
    except Exception as e:
        raise SynthError(f"{path}: cannot be read ({type(e).__name__})") from None


# -- writing ------------------------------------------------------------------------------
def case_files(folder: str | os.PathLike, case_id: str, num_channels: int, file_ending: str) -> list[Path]:
    folder = Path(folder)
    return ([folder / "imagesTr" / f"{case_id}_{c:04d}{file_ending}" for c in range(num_channels)]
            + [folder / "labelsTr" / f"{case_id}{file_ending}"])


def case_complete(folder: str | os.PathLike, case_id: str, num_channels: int, file_ending: str) -> bool:
    return all(p.is_file() for p in case_files(folder, case_id, num_channels, file_ending))


def cast_to_dtype(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip to the range of an integer type; keep floats as they are."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(image), info.min, info.max).astype(dtype)
    return image.astype(dtype)


def _write_array(array: np.ndarray, path: Path, properties: dict, file_ending: str) -> None:
    """Write one channel (spatial array in nnU-Net's (z,) y, x order) with the source's geometry."""
    with atomic_path(path) as tmp:
        if file_ending.lower() in (".png", ".bmp", ".tif", ".tiff"):
            from skimage import io

            if array.ndim == 3:
                if array.shape[0] != 1:
                    raise SynthError(f"{path}: {file_ending} holds 2D images, got shape {array.shape}")
                array = array[0]
            io.imsave(str(tmp), array, check_contrast=False)
        elif "sitk_stuff" in properties:
            import SimpleITK as sitk

            geometry = properties["sitk_stuff"]
            if len(geometry["spacing"]) == 2:
                array = array[0]
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(geometry["spacing"])
            image.SetOrigin(geometry["origin"])
            image.SetDirection(geometry["direction"])
            sitk.WriteImage(image, str(tmp), True)
        else:
            raise SynthError(f"{path}: writing {file_ending} files is not supported "
                             f"(supported: SimpleITK formats and .png/.bmp/.tif)")


def write_case(folder: str | os.PathLike, case_id: str, images: np.ndarray, seg: np.ndarray, properties: dict,
               file_ending: str, image_dtype: np.dtype, seg_dtype: np.dtype = np.uint8) -> None:
    """Write one case into ``folder``/imagesTr and labelsTr, each file atomically.

    ``images`` is (C, *spatial) and ``seg`` (*spatial) or (1, *spatial), as
    nnU-Net's readers return them; ``properties`` are the source case's
    (its geometry is copied). Files that already exist are not rewritten, so a
    rerun completes a half-written case.
    """
    folder = Path(folder)
    seg = seg[0] if seg.ndim == images.ndim else seg
    if images.shape[1:] != seg.shape:
        raise SynthError(f"case '{case_id}': image shape {images.shape[1:]} differs from mask shape {seg.shape}")
    paths = case_files(folder, case_id, images.shape[0], file_ending)
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        # only this case's leftovers: other processes may be writing other cases here
        remove_stale_temp_files(folder / sub, [p.name for p in paths])
    *image_paths, label_path = paths
    for channel, path in enumerate(image_paths):
        if not path.exists():
            _write_array(cast_to_dtype(images[channel], image_dtype), path, properties, file_ending)
    if not label_path.exists():
        _write_array(seg.astype(seg_dtype), label_path, properties, file_ending)
