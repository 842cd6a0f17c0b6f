"""DDTI: Digital Database of Thyroid Ultrasound Images (Pedraza et al., 2015) -> nnU-Net.

Three source layouts are recognised (SOURCE_DIR is the folder shown):

1. The original release (one XML per patient, polygon annotations):
       SOURCE_DIR/1.xml  1_1.jpg  2.xml  2_1.jpg  2_2.jpg ...
   ``{n}.xml`` is patient n; ``<mark><image>k</image><svg>[...]</svg></mark>``
   holds the nodule outlines of ``{n}_{k}.jpg`` as JSON polygons
   (``[{"points": [{"x": .., "y": ..}, ...], "annotationType": "polygon"}, ...]``).
   All polygons of an image are filled into one mask. An image without a
   ``<mark>`` is reported as a problem: every DDTI image shows a nodule, so a
   missing mark is a missing annotation, not an empty mask.
2. The widely shared processed layout (TN-SCUI style), PNG images and masks
   with equal names:
       SOURCE_DIR/image/{name}.PNG   SOURCE_DIR/mask/{name}.PNG
   When names are ``{n}_{k}``, n is the patient; otherwise each image is its
   own patient.
3. The nodule-crop layout (each nodule a 300x300 crop, GIF masks):
       SOURCE_DIR/images/{n}_{k}.png  or  {n}_{k}({j}).png
       SOURCE_DIR/masks/{n}_{k}.gif   or  {n}_{k}({j}).gif
   ``(j)`` numbers the nodules of image k of patient n, one file each with
   one nodule labelled. Copies whose images are pixel-identical are merged
   into one case with the union of their masks (otherwise the same image
   would come with contradicting labels); copies that are different crops
   stay separate cases (``ddti_{n}_{k}_n{j}``, j = the first nodule of the
   merged copies). Either way all cases of a patient stay together.

Output: grayscale PNG, one channel (US); labels 0 background, 1 nodule (any
non-zero mask value). DDTI has no official test set; the converter writes a
5-fold ``splits_final.json`` grouped by patient.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_synth.convert import Case, CaseProblem
from nnunet_synth.convert.images import convert_pair, read_gray, write_png_case
from nnunet_synth.convert.splits import grouped_kfold
from nnunet_synth.errors import SynthError

NAME = "DDTI"
CROP_NAME = re.compile(r"(?P<patient>\d+)_(?P<image>\d+)(?:\((?P<nodule>\d+)\))?")
IMAGE_NAME = re.compile(r"(?P<patient>\d+)_(?P<image>\d+)")


def convert_case(case: Case, folder: str):
    if "polygons" in case.info:
        return convert_xml_case(case, folder)
    return convert_pair(case, folder, color=False)


def convert_xml_case(case: Case, folder: str):
    from skimage.draw import polygon

    warnings: list[str] = []
    image = read_gray(case.info["image"], warnings)
    seg = np.zeros(image.shape[:2], dtype=np.uint8)
    for points in case.info["polygons"]:
        xs, ys = np.array(points, dtype=float).T
        if xs.max() >= image.shape[1] + 1 or ys.max() >= image.shape[0] + 1 or min(xs.min(), ys.min()) < -1:
            raise CaseProblem(case.info["xml"], f"a polygon of {Path(case.info['image']).name} lies outside the "
                                                f"{image.shape[1]}x{image.shape[0]} image")
        rr, cc = polygon(ys, xs, shape=seg.shape)
        seg[rr, cc] = 1
    write_png_case(folder, case.split, case.case_id, image, seg)
    return warnings


def _crop_cases(source: Path, problems) -> list[Case]:
    images = {p.stem: p for p in sorted((source / "images").iterdir()) if p.is_file()}
    masks = {p.stem: p for p in sorted((source / "masks").iterdir()) if p.is_file()}
    for stem in sorted(set(masks) - set(images)):
        problems.add(masks[stem], "mask without an image")
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for stem, path in images.items():
        m = CROP_NAME.fullmatch(stem)
        if m is None:
            problems.add(path, "name is not {patient}_{image} or {patient}_{image}({nodule})")
        elif stem not in masks:
            problems.add(path, "image without a mask in masks/")
        else:
            groups[(m["patient"], m["image"])].append(stem)
    cases = []
    for (patient, image), stems in sorted(groups.items()):
        base = f"ddti_{patient}_{image}"
        copies = _identical_copies(stems, images)
        for members in copies:
            nodule = CROP_NAME.fullmatch(members[0])["nodule"]
            case_id = base if len(copies) == 1 or nodule is None else f"{base}_n{nodule}"
            cases.append(Case(case_id, "Tr", tuple(str(images[s]) for s in members), patient,
                              {"image": str(images[members[0]]), "masks": [str(masks[s]) for s in members]}))
    return cases


def _identical_copies(stems: list[str], images: dict[str, Path]) -> list[list[str]]:
    """Group the files of one image by pixel content: each group becomes one case."""
    if len(stems) == 1:
        return [stems]
    groups: list[tuple[np.ndarray | None, list[str]]] = []
    for stem in stems:
        try:
            pixels = read_gray(images[stem])
        except CaseProblem:
            groups.append((None, [stem]))  # reported when its case is converted
            continue
        for first, members in groups:
            if first is not None and first.shape == pixels.shape and np.array_equal(first, pixels):
                members.append(stem)
                break
        else:
            groups.append((pixels, [stem]))
    return [members for _, members in groups]


def _processed_cases(source: Path, problems) -> list[Case]:
    images = {p.stem: p for p in sorted((source / "image").iterdir()) if p.is_file()}
    masks = {p.stem: p for p in sorted((source / "mask").iterdir()) if p.is_file()}
    for stem in sorted(set(masks) - set(images)):
        problems.add(masks[stem], "mask without an image")
    cases = []
    for stem, path in images.items():
        if stem not in masks:
            problems.add(path, "image without a mask in mask/")
            continue
        m = IMAGE_NAME.fullmatch(stem)
        patient = m["patient"] if m else stem
        cases.append(Case(f"ddti_{stem}", "Tr", (str(path),), patient, {"image": str(path), "masks": [str(masks[stem])]}))
    return cases


def _xml_cases(source: Path, problems) -> list[Case]:
    cases = []
    for xml_path in sorted(source.glob("*.xml"), key=lambda p: (len(p.stem), p.stem)):
        try:
            root = ET.parse(xml_path).getroot()
        except ET.ParseError as e:
            problems.add(xml_path, f"unreadable XML ({e})")
            continue
        patient = (root.findtext("number") or xml_path.stem).strip()
        polygons: dict[str, list] = defaultdict(list)
        for mark in root.iter("mark"):
            k = (mark.findtext("image") or "").strip()
            svg = (mark.findtext("svg") or "").strip()
            try:
                shapes = json.loads(svg) if svg else []
                polygons[k] += [[(float(p["x"]), float(p["y"])) for p in s["points"]] for s in shapes]
            except (ValueError, KeyError, TypeError) as e:
                problems.add(xml_path, f"image {k}: the <svg> polygon list is not valid ({e})")
                polygons.setdefault(k, None)
        for image_path in sorted(source.glob(f"{xml_path.stem}_*.jpg")):
            k = image_path.stem.split("_", 1)[1]
            if k not in polygons:
                problems.add(image_path, f"no <mark> for image {k} in {xml_path.name}")
            elif polygons[k] is not None:
                cases.append(Case(f"ddti_{patient}_{k}", "Tr", (str(image_path), str(xml_path)), patient,
                                  {"image": str(image_path), "xml": str(xml_path), "polygons": polygons[k]}))
    return cases


def find_cases(source: Path, problems) -> tuple[str, list[Case]]:
    if (source / "images").is_dir() and (source / "masks").is_dir():
        return "nodule crops (images/ + masks/)", _crop_cases(source, problems)
    if (source / "image").is_dir() and (source / "mask").is_dir():
        return "processed PNGs (image/ + mask/)", _processed_cases(source, problems)
    if any(source.glob("*.xml")):
        return "original XML annotations", _xml_cases(source, problems)
    raise SynthError(f"{source}: not a DDTI layout (expected images/ + masks/, image/ + mask/, or {{n}}.xml files "
                     f"with {{n}}_{{k}}.jpg images; see 'nnunet-synth convert ddti --help')")


def convert(source: Path, ds) -> None:
    layout, cases = find_cases(source, ds.problems)
    converted = ds.convert(convert_case, cases, desc=f"DDTI ({layout})")
    patients = {c.case_id: c.patient for c in converted}
    ds.write_splits(grouped_kfold(list(patients), list(patients.values())), patients)
    generate_dataset_json(str(ds.folder), {0: "US"}, {"background": 0, "nodule": 1}, ds.num_training, ".png",
                          dataset_name=ds.name, reference="https://doi.org/10.1117/12.2073532",
                          license="see the DDTI release terms (Universidad Nacional de Colombia)",
                          description=f"DDTI thyroid ultrasound, converted from the {layout} layout by nnunet-synth",
                          converted_by="nnunet-synth convert ddti",
                          source_mask_mapping={"0": "background (0)", "any non-zero value / polygon interior": "nodule (1)"})


if __name__ == "__main__":
    import sys

    from nnunet_synth.commands.convert import script_main

    raise SystemExit(script_main(sys.modules[__name__]))
