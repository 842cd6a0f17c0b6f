"""Finding image/mask pairs in folder layouts."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from nnunet_synth.convert.staging import Case

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


def visible_files(folder: Path, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    """Image files of a folder, without hidden files (.DS_Store, ._name from macOS archives)."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes)


def paired_cases(image_dir: Path, mask_dir: Path | None, split: str, problems, *,
                 mask_name: Callable[[Path], str], case_id: Callable[[Path], str],
                 is_image: Callable[[Path], bool] = lambda p: True) -> list[Case]:
    """One case per image in ``image_dir`` with the mask ``mask_dir / mask_name(image)``.

    With ``mask_dir=None`` the cases have no labels (a test set whose ground
    truth is not published). Masks that belong to no image are reported.
    """
    images = [p for p in visible_files(image_dir) if is_image(p)]
    cases = []
    expected = set()
    for image in images:
        if mask_dir is None:
            cases.append(Case(case_id(image), split, (str(image),), None, {"image": str(image), "masks": None}))
            continue
        mask = Path(mask_dir) / mask_name(image)
        expected.add(mask.name)
        if not mask.is_file():
            problems.add(image, f"no mask {mask.name} in {mask_dir}")
            continue
        cases.append(Case(case_id(image), split, (str(image), str(mask)), None,
                          {"image": str(image), "masks": [str(mask)]}))
    if mask_dir is not None:
        for orphan in visible_files(mask_dir):
            if orphan.name not in expected:
                problems.add(orphan, "mask without an image")
    return cases
