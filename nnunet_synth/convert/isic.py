"""The ISIC challenge layouts (2017 part 1, 2018 task 1), shared by both converter scripts."""
from __future__ import annotations

from pathlib import Path

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_synth.convert.images import convert_pair
from nnunet_synth.convert.pairs import paired_cases
from nnunet_synth.errors import SynthError


def isic_cases(source: Path, problems, subsets: list[tuple[str, str, str, bool]]):
    """Cases of ``(image folder, ground-truth folder, split, required)`` subsets.

    Only ``ISIC_NNNNNNN.jpg`` files are images; the ``_superpixels.png`` files
    and metadata CSVs next to them are not. A subset whose ground-truth folder
    is missing goes to imagesTs without labels; a missing required subset is
    an error. Returns (cases, notes about what was found).
    """
    cases, notes = [], []
    for image_dir, gt_dir, split, required in subsets:
        if not (source / image_dir).is_dir():
            if required:
                raise SynthError(f"{source}: no {image_dir}/ folder (see 'nnunet-synth convert --help' for the layout)")
            notes.append(f"{image_dir}/ not found: left out")
            continue
        masks = source / gt_dir if (source / gt_dir).is_dir() else None
        if masks is None:
            if required:
                raise SynthError(f"{source}: no {gt_dir}/ folder next to {image_dir}/")
            split = "Ts"
            notes.append(f"{gt_dir}/ not found: {image_dir} goes to imagesTs without labels")
        cases += paired_cases(source / image_dir, masks, split, problems,
                              mask_name=lambda p: f"{p.stem}_segmentation.png", case_id=lambda p: p.stem,
                              is_image=lambda p: p.suffix.lower() in (".jpg", ".jpeg", ".png")
                              and p.stem.startswith("ISIC_") and not p.stem.endswith("_superpixels"))
    return cases, notes


def convert_isic_case(case, folder: str):
    """Per-case function of both ISIC converters: RGB image -> three PNG channels, mask -> {0, 1}."""
    return convert_pair(case, folder, color=True)


def convert_isic(source: Path, ds, subsets, year: int) -> None:
    cases, notes = isic_cases(source, ds.problems, subsets)
    for note in notes:
        print(note)
    ds.convert(convert_isic_case, cases, desc=f"ISIC {year}")
    generate_dataset_json(str(ds.folder), {0: "R", 1: "G", 2: "B"}, {"background": 0, "lesion": 1},
                          ds.num_training, ".png", dataset_name=ds.name,
                          reference=f"https://challenge.isic-archive.com/data/#{year}",
                          license="CC BY-NC 4.0 (ISIC Archive)", converted_by=f"nnunet-synth convert isic{year}",
                          description=f"ISIC {year} lesion segmentation; training + validation in imagesTr, "
                                      f"official test set in imagesTs",
                          source_mask_mapping={"0": "background (0)", "255": "lesion (1)"})
