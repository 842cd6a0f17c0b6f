"""Test sets for cross-eval: where their images and labels are, and labels the models can be scored on.

A raw dataset (an id, a name in $nnUNet_raw, or a folder with dataset.json) is
read from imagesTs/labelsTs when both exist, else from imagesTr/labelsTr. A
plain folder holds images/ (nnU-Net channel naming, CASE_0000.ext) and labels/
(CASE.ext). Test images must use the models' file ending and channel count,
and their label values must be ones the models predict (a label map can
translate them first).

nnU-Net is imported inside the functions, so ``nnunet-synth cross-eval --help``
does not load torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_synth.atomic import atomic_path, read_json, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.files import read_seg
from nnunet_synth.labels import check_label_values, unknown_label_values
from nnunet_synth.raw_dataset import find_raw_dataset, load_dataset_json


@dataclass
class TestSet:
    __test__ = False  # not a pytest test class, despite the name

    name: str
    images: Path
    labels: Path
    file_ending: str
    cases: dict[str, list[str]] = field(default_factory=dict)  # case -> image files (channel order)

    def label_file(self, case: str) -> Path:
        return self.labels / f"{case}{self.file_ending}"


def open_test_set(name: str, where: str, file_ending: str) -> TestSet:
    """Find a test set's images and labels and list its cases (see the module docstring for the layouts)."""
    from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder

    folder = Path(where)
    if (folder / "images").is_dir() and not (folder / "dataset.json").is_file():
        images, labels = folder / "images", folder / "labels"
    else:
        try:
            folder = find_raw_dataset(where)
            dj = load_dataset_json(folder)
        except SynthError as e:  # name the test set: a study has several
            raise SynthError(f"test set '{name}': {e}") from None
        if dj.get("file_ending") != file_ending:
            raise SynthError(f"test set '{name}': {folder / 'dataset.json'} has file ending {dj.get('file_ending')}, "
                             f"the models use {file_ending}; convert the test set first")
        use_ts = (folder / "imagesTs").is_dir() and (folder / "labelsTs").is_dir()
        images, labels = (folder / "imagesTs", folder / "labelsTs") if use_ts else (folder / "imagesTr", folder / "labelsTr")
    for sub in (images, labels):
        if not sub.is_dir():
            raise SynthError(f"test set '{name}': {sub} is missing")
    test = TestSet(name, images, labels, file_ending)
    for case in sorted(get_identifiers_from_splitted_dataset_folder(str(images), file_ending)):
        test.cases[case] = sorted(str(p) for p in images.glob(f"{case}_[0-9][0-9][0-9][0-9]{file_ending}"))
        if not test.label_file(case).is_file():
            raise SynthError(f"test set '{name}': case '{case}' has no label file {test.label_file(case)}")
    if not test.cases:
        raise SynthError(f"test set '{name}': no images ending in {file_ending} in {images}")
    return test


def check_channels(test: TestSet, n_channels: int) -> None:
    """Every case has the models' number of image files, none of them empty (a cheap check before any reading)."""
    for case, files in test.cases.items():
        if len(files) != n_channels:
            raise SynthError(f"test set '{test.name}': case '{case}' has {len(files)} image file(s) in "
                             f"{test.images}, the models expect {n_channels} channel(s)")
        for f in files:
            if Path(f).stat().st_size == 0:
                raise SynthError(f"test set '{test.name}': case '{case}': image {f} is empty (0 bytes)")


def apply_label_map(seg: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    mapped = seg.copy()
    for src, dst in mapping.items():
        mapped[seg == src] = dst  # from the original values, so 1:2 and 2:1 swap rather than chain
    return mapped


def map_labels(test: TestSet, mapping: dict[int, int], out_folder: Path, reader_writer) -> TestSet:
    """Write the test set's labels with ``mapping`` applied (complete files are kept on a rerun)."""
    out_folder.mkdir(parents=True, exist_ok=True)
    record = out_folder / "label_map.json"
    wanted = {"source": str(test.labels), "mapping": {str(k): v for k, v in sorted(mapping.items())}}
    if record.is_file() and read_json(record) != wanted:
        raise SynthError(f"{out_folder}: holds labels mapped differently ({record}); delete it or choose another -o")
    # The record goes first, so files of an interrupted run are never taken for another mapping's.
    write_json_atomic(record, wanted)
    for case in test.cases:
        target = out_folder / f"{case}{test.file_ending}"
        if target.is_file():
            continue
        seg, props = read_seg(reader_writer, test.label_file(case), f"test set '{test.name}': case '{case}'", "label")
        mapped = apply_label_map(seg, mapping)
        with atomic_path(target) as tmp:
            reader_writer.write_seg(mapped.astype(np.int16)[0], str(tmp), props)
    return TestSet(test.name, test.images, out_folder, test.file_ending, dict(test.cases))


def check_test_labels(test: TestSet, allowed: set[int], reader_writer, mapping: dict[int, int] | None = None) -> None:
    """Refuse label values the models do not know before any prediction is made, with the fix in the message.

    With ``mapping``, the values are checked as ``map_labels`` will write them (nothing is written here).
    """
    for case in test.cases:
        where = f"test set '{test.name}': case '{case}'"
        seg = read_seg(reader_writer, test.label_file(case), where, "label")[0]
        if mapping:
            seg = apply_label_map(seg, mapping)
            check_label_values(seg, allowed, where=f"{where} ({test.label_file(case)}, after --label-map)",
                               allowed_from="the models")
            continue
        unknown = unknown_label_values(seg, allowed)
        hint = f"map them with --label-map, e.g. --label-map {unknown[0]}:1" if unknown else ""
        check_label_values(seg, allowed, where=f"test set '{test.name}': case '{case}' ({test.label_file(case)})",
                           allowed_from="the models", hint=hint)
