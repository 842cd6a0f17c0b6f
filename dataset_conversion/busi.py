"""BUSI: Breast Ultrasound Images Dataset (Al-Dhabyani et al., 2020) -> nnU-Net.

Source layout (the Kaggle / Cairo University download, SOURCE_DIR as shown):

    Dataset_BUSI_with_GT/
        benign/     benign (1).png  benign (1)_mask.png  benign (4)_mask_1.png ...
        malignant/  malignant (1).png  malignant (1)_mask.png ...
        normal/     normal (1).png  normal (1)_mask.png ...

An image may have several ``_mask``, ``_mask_1``, ``_mask_2`` files, one per
lesion; they are merged (union) into one label image. Normal images have empty
masks and stay in the dataset as lesion-free cases. The images are stored as
RGB with three equal channels and become one grayscale channel.

Labels: 0 background, 1 lesion (any non-zero mask value); with ``--classes``:
1 benign lesion, 2 malignant lesion. BUSI has no official test split and no
patient identifiers. Case ids: ``busi_{class}_{number:03d}``.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_synth.convert import Case
from nnunet_synth.convert.images import check_same_size, read_gray, read_mask, write_png_case
from nnunet_synth.convert.pairs import visible_files
from nnunet_synth.errors import SynthError

NAME = "BUSI"
CLASSES = ("benign", "malignant", "normal")
FILE_NAME = re.compile(r"(?P<cls>benign|malignant|normal) \((?P<number>\d+)\)(?P<mask>_mask(?:_(?P<k>\d+))?)?")


def add_arguments(parser) -> None:
    parser.add_argument("--classes", action="store_true",
                        help="label benign lesions 1 and malignant lesions 2 instead of one lesion label")


def convert_case(case: Case, folder: str):
    warnings: list[str] = []
    image = read_gray(case.info["image"], warnings)
    seg = np.zeros(image.shape, dtype=np.uint8)
    for mask_path in case.info["masks"]:
        mask = read_mask(mask_path)
        check_same_size(image, mask, mask_path, case.info["image"])
        seg |= mask
    write_png_case(folder, case.split, case.case_id, image, seg * case.info["label"])
    return warnings


def find_cases(source: Path, problems, classes: bool) -> list[Case]:
    present = [c for c in CLASSES if (source / c).is_dir()]
    if not present:
        raise SynthError(f"{source}: no benign/, malignant/ or normal/ folder; pass the Dataset_BUSI_with_GT folder")
    cases = []
    for cls in present:
        images: dict[str, Path] = {}
        masks: dict[str, list[Path]] = defaultdict(list)
        for path in visible_files(source / cls):
            m = FILE_NAME.fullmatch(path.stem)
            if m is None or m["cls"] != cls:
                problems.add(path, f"unexpected file name in {cls}/ (expected '{cls} (N).png' or '{cls} (N)_mask.png')")
            elif m["mask"]:
                masks[m["number"]].append(path)
            else:
                images[m["number"]] = path
        for number in sorted(set(masks) - set(images), key=int):
            for path in masks[number]:
                problems.add(path, "mask without an image")
        # Normal images have empty masks; the label value only matters for lesion classes.
        label = 2 if classes and cls == "malignant" else 1
        for number, image in sorted(images.items(), key=lambda kv: int(kv[0])):
            if number not in masks:
                problems.add(image, "image without a _mask file")
                continue
            cases.append(Case(f"busi_{cls}_{int(number):03d}", "Tr", (str(image),), None,
                              {"image": str(image), "masks": [str(p) for p in masks[number]], "label": label}))
    return cases


def convert(source: Path, ds, classes: bool = False) -> None:
    ds.convert(convert_case, find_cases(source, ds.problems, classes), desc="BUSI")
    labels = {"background": 0, "benign": 1, "malignant": 2} if classes else {"background": 0, "lesion": 1}
    mapping = ({"benign/*_mask*": "benign (1)", "malignant/*_mask*": "malignant (2)"} if classes
               else {"any non-zero value in a *_mask* file": "lesion (1)"})
    generate_dataset_json(str(ds.folder), {0: "US"}, labels, ds.num_training, ".png", dataset_name=ds.name,
                          reference="https://doi.org/10.1016/j.dib.2019.104863", license="CC0 1.0 (per the Kaggle release)",
                          description="BUSI breast ultrasound; all _mask files of an image merged; normal cases have empty masks",
                          converted_by="nnunet-synth convert busi",
                          source_mask_mapping={"0": "background (0)", **mapping})


if __name__ == "__main__":
    import sys

    from nnunet_synth.commands.convert import script_main

    raise SystemExit(script_main(sys.modules[__name__]))
