"""ISIC 2017 Part 1: skin lesion segmentation (Codella et al., 2018) -> nnU-Net.

Source layout (the challenge downloads unzipped into SOURCE_DIR):

    ISIC-2017_Training_Data/ISIC_0000000.jpg  (+ ISIC_0000000_superpixels.png, metadata CSV: ignored)
    ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png
    ISIC-2017_Validation_Data/            ISIC-2017_Validation_Part1_GroundTruth/
    ISIC-2017_Test_v2_Data/               ISIC-2017_Test_v2_Part1_GroundTruth/

Training (2000) and validation (150) -> imagesTr/labelsTr; the official test
set (600) -> imagesTs/labelsTs. Validation and test are optional. Case ids are
the ISIC ids. JPEG images become three PNG channels (R, G, B: ``_0000`` to
``_0002``), never re-encoded as JPEG. Masks: 0 background, 255 lesion -> 1; any
other value is reported (anti-aliased mask).
"""
from __future__ import annotations

from pathlib import Path

from nnunet_synth.convert.isic import convert_isic  # per-case function and dataset.json shared by both years

NAME = "ISIC2017"
SUBSETS = [
    ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth", "Tr", True),
    ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth", "Tr", False),
    ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth", "Ts", False),
]


def convert(source: Path, ds) -> None:
    convert_isic(source, ds, SUBSETS, 2017)


if __name__ == "__main__":
    import sys

    from nnunet_synth.commands.convert import script_main

    raise SystemExit(script_main(sys.modules[__name__]))
