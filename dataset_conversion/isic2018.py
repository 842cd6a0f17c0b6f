"""ISIC 2018 Task 1: skin lesion boundary segmentation (Codella et al., 2019) -> nnU-Net.

Source layout (the challenge downloads unzipped into SOURCE_DIR):

    ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg  (+ LICENSE.txt, ATTRIBUTION.txt: ignored)
    ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png
    ISIC2018_Task1-2_Validation_Input/    ISIC2018_Task1_Validation_GroundTruth/
    ISIC2018_Task1-2_Test_Input/          ISIC2018_Task1_Test_GroundTruth/

Training (2594) and validation (100) -> imagesTr/labelsTr; the official test
set (1000) -> imagesTs/labelsTs. The validation and test ground truth were
published after the challenge; a subset without its ground-truth folder goes
to imagesTs without labels. Case ids are the ISIC ids. JPEG images become
three PNG channels (R, G, B), never re-encoded as JPEG. Masks: 0 background,
255 lesion -> 1; any other value is reported (anti-aliased mask).
"""
from __future__ import annotations

from pathlib import Path

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_synth.convert import Case
from nnunet_synth.convert.images import convert_pair
from nnunet_synth.convert.isic import isic_cases

NAME = "ISIC2018"
SUBSETS = [
    ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth", "Tr", True),
    ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth", "Tr", False),
    ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth", "Ts", False),
]


def convert_case(case: Case, folder: str):
    return convert_pair(case, folder, color=True)


def convert(source: Path, ds, options) -> None:
    cases, notes = isic_cases(source, ds.problems, SUBSETS)
    for note in notes:
        print(note)
    ds.convert(convert_case, cases, desc="ISIC 2018")
    generate_dataset_json(str(ds.folder), {0: "R", 1: "G", 2: "B"}, {"background": 0, "lesion": 1},
                          ds.num_training, ".png", dataset_name=ds.name, reference="https://challenge.isic-archive.com/data/#2018",
                          license="CC BY-NC 4.0 (ISIC Archive)", converted_by="nnunet-synth convert isic2018",
                          description="ISIC 2018 task 1; training + validation in imagesTr, official test set in imagesTs",
                          source_mask_mapping={"0": "background (0)", "255": "lesion (1)"})


if __name__ == "__main__":
    import sys

    from nnunet_synth.convert.run import script_main

    raise SystemExit(script_main(sys.modules[__name__]))
