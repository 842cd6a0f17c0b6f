"""TN3K: thyroid nodule ultrasound (Gong et al., TRFE-Net, 2021) -> nnU-Net.

Source layout (as released with TRFE-Net, SOURCE_DIR as shown):

    tn3k/
        trainval-image/0000.jpg ...      trainval-mask/0000.jpg ...
        test-image/0000.jpg ...          test-mask/0000.jpg ...
        tn3k-trainval-fold0.json ... tn3k-trainval-fold4.json    {"train": [0, 1, ...], "val": [...]}
        label4trainval.csv  label4test.csv                        (benign/malignant labels: not used)

Images and masks are JPEG. The images become one grayscale PNG channel (no
second lossy encoding). JPEG masks carry compression noise along edges, so
they are thresholded at half their range (values > 127 -> nodule); a "mask"
with more than 5% mid-range pixels is reported as not being a mask.

trainval -> imagesTr/labelsTr (``tn3k_{number}``); the official test set ->
imagesTs/labelsTs (``tn3k_test_{number}``). Each ``tn3k-trainval-foldK.json``
becomes fold K of ``splits_final.json`` (ids in the files are the image
numbers, as integers or file names). Without fold files nnU-Net makes its own
split. TN3K has no patient identifiers.
"""
from __future__ import annotations

import re
from pathlib import Path

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_synth.atomic import read_json
from nnunet_synth.convert import Case
from nnunet_synth.convert.images import convert_pair
from nnunet_synth.convert.pairs import paired_cases
from nnunet_synth.errors import SynthError

NAME = "TN3K"


def convert_case(case: Case, folder: str):
    return convert_pair(case, folder, color=False)


def _case_id(stem: str, prefix: str) -> str:
    return f"{prefix}_{int(stem):04d}" if stem.isdigit() else f"{prefix}_{stem}"


def find_cases(source: Path, problems) -> list[Case]:
    for sub in ("trainval-image", "trainval-mask"):
        if not (source / sub).is_dir():
            raise SynthError(f"{source}: no {sub}/ folder; pass the tn3k folder (see 'nnunet-synth convert tn3k --help')")
    cases = paired_cases(source / "trainval-image", source / "trainval-mask", "Tr", problems,
                         mask_name=lambda p: p.name, case_id=lambda p: _case_id(p.stem, "tn3k"))
    if (source / "test-image").is_dir():
        test_masks = source / "test-mask" if (source / "test-mask").is_dir() else None
        cases += paired_cases(source / "test-image", test_masks, "Ts", problems,
                              mask_name=lambda p: p.name, case_id=lambda p: _case_id(p.stem, "tn3k_test"))
    return cases


def read_folds(source: Path, problems, known: set[str]) -> list[dict]:
    files = sorted(source.glob("tn3k-trainval-fold*.json"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    folds = []
    for path in files:
        try:
            data = read_json(path)
        except SynthError as e:
            problems.add(path, str(e).removeprefix(f"{path}: "))  # the problem list names the file itself
            continue
        try:
            fold = {key: [_case_id(Path(str(i)).stem if not isinstance(i, int) else str(i), "tn3k")
                          for i in data[key]] for key in ("train", "val")}
        except (ValueError, KeyError, TypeError) as e:
            problems.add(path, f"not a fold file with 'train' and 'val' lists ({e})")
            continue
        missing = sorted(set(fold["train"] + fold["val"]) - known)
        if missing:
            problems.add(path, f"names {len(missing)} case(s) that were not converted, e.g. {missing[0]}")
        folds.append({key: sorted(set(ids) & known) for key, ids in fold.items()})
    return folds


def convert(source: Path, ds) -> None:
    converted = ds.convert(convert_case, find_cases(source, ds.problems), desc="TN3K")
    folds = read_folds(source, ds.problems, {c.case_id for c in converted if c.split == "Tr"})
    ds.check_problems()
    if folds:
        ds.write_splits(folds)
    generate_dataset_json(str(ds.folder), {0: "US"}, {"background": 0, "nodule": 1}, ds.num_training, ".png",
                          dataset_name=ds.name, reference="https://github.com/haifangong/TRFE-Net-for-thyroid-nodule-segmentation",
                          license="see the TN3K release terms", converted_by="nnunet-synth convert tn3k",
                          description="TN3K thyroid ultrasound; official test set in imagesTs/labelsTs; "
                                      "official trainval folds in splits_final.json",
                          source_mask_mapping={"JPEG mask value <= 127": "background (0)", "> 127": "nodule (1)"})


if __name__ == "__main__":
    import sys

    from nnunet_synth.commands.convert import script_main

    raise SystemExit(script_main(sys.modules[__name__]))
