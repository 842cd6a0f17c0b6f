"""PH2: dermoscopic images (Mendonca et al., 2013) -> nnU-Net.

Source layout (the PH2 download, SOURCE_DIR = PH2Dataset or the folder inside it):

    PH2Dataset/
        PH2_dataset.xlsx / PH2_dataset.txt          (clinical diagnosis: not used)
        PH2 Dataset images/
            IMD002/
                IMD002_Dermoscopic_Image/IMD002.bmp
                IMD002_lesion/IMD002_lesion.bmp
                IMD002_roi/IMD002_R1_Label4.bmp ... (colour-structure regions: not used)

200 images, all -> imagesTr/labelsTr (PH2 has no official test split); case
ids are the IMD numbers. Images become three PNG channels (R, G, B). Lesion
masks: 0 background, 255 (or 1) lesion -> 1.
"""
from __future__ import annotations

from pathlib import Path

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_synth.convert import Case
from nnunet_synth.convert.images import convert_pair
from nnunet_synth.errors import SynthError

NAME = "PH2"


def convert_case(case: Case, folder: str):
    return convert_pair(case, folder, color=True)


def find_cases(source: Path, problems) -> list[Case]:
    folders = sorted(p for p in source.rglob("IMD*") if p.is_dir() and (p / f"{p.name}_Dermoscopic_Image").is_dir())
    if not folders:
        raise SynthError(f"{source}: no IMDxxx/IMDxxx_Dermoscopic_Image folders (see 'nnunet-synth convert ph2 --help')")
    cases = []
    for folder in folders:
        images = sorted((folder / f"{folder.name}_Dermoscopic_Image").glob(f"{folder.name}.*"))
        masks = sorted((folder / f"{folder.name}_lesion").glob(f"{folder.name}_lesion.*"))
        if len(images) != 1:
            problems.add(folder / f"{folder.name}_Dermoscopic_Image", f"expected one {folder.name}.bmp, found {len(images)}")
        elif len(masks) != 1:
            problems.add(folder / f"{folder.name}_lesion", f"expected one {folder.name}_lesion.bmp, found {len(masks)}")
        else:
            cases.append(Case(f"ph2_{folder.name}", "Tr", (str(images[0]), str(masks[0])), None,
                              {"image": str(images[0]), "masks": [str(masks[0])]}))
    return cases


def convert(source: Path, ds) -> None:
    ds.convert(convert_case, find_cases(source, ds.problems), desc="PH2")
    generate_dataset_json(str(ds.folder), {0: "R", 1: "G", 2: "B"}, {"background": 0, "lesion": 1},
                          ds.num_training, ".png", dataset_name=ds.name,
                          reference="https://doi.org/10.1109/EMBC.2013.6610779",
                          license="PH2 database terms (research use)", converted_by="nnunet-synth convert ph2",
                          description="PH2 dermoscopy; lesion masks only (colour-structure ROIs not used)",
                          source_mask_mapping={"0": "background (0)", "255": "lesion (1)"})


if __name__ == "__main__":
    import sys

    from nnunet_synth.commands.convert import script_main

    raise SystemExit(script_main(sys.modules[__name__]))
