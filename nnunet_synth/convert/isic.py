"""The ISIC challenge layouts (2017 part 1, 2018 task 1), shared by both converter scripts."""
from __future__ import annotations

from pathlib import Path

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
