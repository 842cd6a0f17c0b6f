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

from nnunet_synth.convert.isic import convert_isic  # per-case function and dataset.json shared by both years

NAME = "ISIC2018"
SUBSETS = [
    ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth", "Tr", True),
    ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth", "Tr", False),
    ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth", "Ts", False),
]


def convert(source: Path, ds) -> None:
    convert_isic(source, ds, SUBSETS, 2018)


if __name__ == "__main__":
    import sys

    from nnunet_synth.commands.convert import script_main

    raise SystemExit(script_main(sys.modules[__name__]))
