"""Test fixtures for the converters: tiny source folders in each public dataset's download layout.

Every builder writes real file names and nesting, a few seeded cases with a
disc-shaped lesion, and (with ``broken=True``) the typical defects: an
unreadable file, an anti-aliased mask, a mask of another size. Each returns
the source folder and a dict of what a conversion should find.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _case(rng: np.random.Generator, h: int = 24, w: int = 32) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.uniform(0.35 * h, 0.65 * h), rng.uniform(0.35 * w, 0.65 * w), rng.uniform(0.15, 0.3) * h
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image = np.clip(rng.normal(90, 25, (h, w)) + 80 * mask, 0, 255).astype(np.uint8)
    return image, mask


def _save(path: Path, array: np.ndarray, **kw) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def _rgb(gray: np.ndarray, colour: bool = False) -> np.ndarray:
    if not colour:
        return np.stack([gray] * 3, -1)
    return np.stack([gray, (gray * 0.8).astype(np.uint8), (gray * 0.6).astype(np.uint8)], -1)


def _anti_aliased(mask: np.ndarray) -> np.ndarray:
    values = mask.astype(np.uint8) * 255
    edge = mask ^ np.roll(mask, 1, axis=1)
    values[edge] = 128
    return values


def _corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n this file was cut off during download")
    return path


def ddti_crops(root, broken: bool = False, seed: int = 0):
    """``images/{n}_{k}({j}).png`` + ``masks/...gif``: merged twin, separate crops, several images per patient."""
    rng = np.random.default_rng(seed)
    src = Path(root) / "ddti_crop"
    for stem in ["1_1", "4_1", "4_2", "5_1", "6_1", "7_1"]:
        img, mask = _case(rng)
        _save(src / "images" / f"{stem}.png", img)
        _save(src / "masks" / f"{stem}.gif", mask.astype(np.uint8) * 255)
    img, mask = _case(rng)
    _, mask2 = _case(rng)
    for j, m in ((1, mask), (2, mask2)):  # two nodules, same pixels: one case
        _save(src / "images" / f"2_1({j}).png", img)
        _save(src / "masks" / f"2_1({j}).gif", m.astype(np.uint8) * 255)
    merged = mask | mask2
    for j in (1, 2):  # two nodules, two different crops: two cases
        img, mask = _case(rng)
        _save(src / "images" / f"3_1({j}).png", img)
        _save(src / "masks" / f"3_1({j}).gif", mask.astype(np.uint8) * 255)
    # A third file repeating crop (2) with another nodule: merged into case ddti_3_1_n2.
    _, mask3 = _case(rng)
    _save(src / "images" / "3_1(3).png", img)
    _save(src / "masks" / "3_1(3).gif", mask3.astype(np.uint8) * 255)
    expected = {"cases": 9, "patients": 7, "merged": [("ddti_2_1", merged), ("ddti_3_1_n2", mask | mask3)],
                "separate": ["ddti_3_1_n1", "ddti_3_1_n2"]}
    if broken:
        img, mask = _case(rng)
        _corrupt(src / "images" / "8_1.png")
        _save(src / "masks" / "8_1.gif", mask.astype(np.uint8) * 255)
        _save(src / "images" / "9_1.png", img)
        _save(src / "masks" / "9_1.png", _anti_aliased(mask))
        _save(src / "images" / "10_1.png", img)
        _save(src / "masks" / "10_1.gif", np.zeros((20, 20), np.uint8))
        expected["bad"] = ["8_1.png", "9_1.png", "10_1.gif"]
    return src, expected


def ddti_xml(root, broken: bool = False, seed: int = 0):
    """The original release: ``{n}.xml`` with JSON polygons in ``<svg>``, ``{n}_{k}.jpg`` images."""
    rng = np.random.default_rng(seed)
    src = Path(root) / "DDTI"
    polygon_a = [{"x": 4, "y": 4}, {"x": 14, "y": 4}, {"x": 14, "y": 12}, {"x": 4, "y": 12}]
    polygon_b = [{"x": 20, "y": 14}, {"x": 28, "y": 14}, {"x": 24, "y": 20}]
    layout = {1: {1: [polygon_a]}, 2: {1: [polygon_a, polygon_b], 2: [polygon_b]}, 3: {1: [polygon_b]}}
    if broken:
        layout[4] = {1: [polygon_a], 2: None}  # image 2 has no <mark>
        layout[5] = {1: "not json"}
    for n, images in layout.items():
        marks = []
        for k, polys in images.items():
            _save(src / f"{n}_{k}.jpg", _case(rng)[0], quality=95)
            if polys is not None:
                svg = polys if isinstance(polys, str) else json.dumps([{"points": p, "annotationType": "polygon"} for p in polys])
                marks.append(f"<mark><image>{k}</image><svg>{svg}</svg></mark>")
        (src / f"{n}.xml").write_text(f'<?xml version="1.0" encoding="utf-8"?>\n<case><number>{n}</number><age>40</age>'
                                      f'<sex>F</sex><tirads>3</tirads>{"".join(marks)}</case>\n')
    expected = {"cases": 4, "patients": 3, "two_polygons": "ddti_2_1"}
    if broken:
        expected["bad"] = ["4_2.jpg", "5.xml"]
    return src, expected


def ddti_processed(root, broken: bool = False, seed: int = 0):
    """The TN-SCUI style processed layout: ``image/{n}_{k}.PNG`` + ``mask/{n}_{k}.PNG``."""
    rng = np.random.default_rng(seed)
    src = Path(root) / "DDTI_processed"
    for stem in ["1_1", "1_2", "2_1", "3_1"]:
        img, mask = _case(rng)
        _save(src / "image" / f"{stem}.PNG", img)
        _save(src / "mask" / f"{stem}.PNG", mask.astype(np.uint8) * 255)
    return src, {"cases": 4, "patients": 3}


def busi(root, broken: bool = False, seed: int = 0):
    """``Dataset_BUSI_with_GT/{benign,malignant,normal}/{cls} (N).png`` with ``_mask``/``_mask_1`` files."""
    rng = np.random.default_rng(seed)
    src = Path(root) / "Dataset_BUSI_with_GT"
    layout = {"benign": [1, 2, 3], "malignant": [1, 2], "normal": [1]}
    for cls, numbers in layout.items():
        for n in numbers:
            img, mask = _case(rng)
            _save(src / cls / f"{cls} ({n}).png", _rgb(img))
            mask = np.zeros_like(mask) if cls == "normal" else mask
            _save(src / cls / f"{cls} ({n})_mask.png", mask.astype(np.uint8) * 255)
    second = np.zeros((24, 32), bool)
    second[2:6, 2:6] = True
    _save(src / "benign" / "benign (2)_mask_1.png", second.astype(np.uint8) * 255)
    (src / "benign" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    expected = {"cases": 6, "second_mask": ("busi_benign_002", second), "empty": "busi_normal_001"}
    if broken:
        img, mask = _case(rng)
        _save(src / "malignant" / "malignant (3).png", _rgb(img))
        _save(src / "malignant" / "malignant (3)_mask.png", _anti_aliased(mask))
        _corrupt(src / "benign" / "benign (4).png")
        _save(src / "benign" / "benign (4)_mask.png", mask.astype(np.uint8) * 255)
        _save(src / "normal" / "normal (2).png", _rgb(img))
        _save(src / "normal" / "normal (2)_mask.png", np.zeros((30, 30), np.uint8))
        expected["bad"] = ["malignant (3)_mask.png", "benign (4).png", "normal (2)_mask.png"]
    return src, expected


def tn3k(root, broken: bool = False, seed: int = 0):
    """``tn3k/{trainval,test}-{image,mask}/NNNN.jpg`` and ``tn3k-trainval-fold0.json``."""
    rng = np.random.default_rng(seed)
    src = Path(root) / "tn3k"
    for split, count in (("trainval", 6), ("test", 2)):
        for i in range(count):
            img, mask = _case(rng)
            _save(src / f"{split}-image" / f"{i:04d}.jpg", img, quality=90)
            _save(src / f"{split}-mask" / f"{i:04d}.jpg", mask.astype(np.uint8) * 255, quality=90)
    (src / "tn3k-trainval-fold0.json").write_text(json.dumps({"train": [0, 1, 2, 3], "val": [4, 5]}))
    expected = {"train": 6, "test": 2, "fold0_val": ["tn3k_0004", "tn3k_0005"]}
    if broken:
        img, mask = _case(rng)
        _corrupt(src / "trainval-image" / "0006.jpg")
        _save(src / "trainval-mask" / "0006.jpg", mask.astype(np.uint8) * 255)
        _save(src / "trainval-image" / "0007.jpg", img)
        _save(src / "trainval-mask" / "0007.jpg", np.zeros((10, 10), np.uint8))
        expected["bad"] = ["0006.jpg", "0007.jpg"]
    return src, expected


def isic(root, year: int = 2017, broken: bool = False, seed: int = 0):
    """ISIC 2017 part 1 or 2018 task 1 download folders (JPEG images, ``_segmentation.png`` masks)."""
    rng = np.random.default_rng(seed)
    src = Path(root) / f"ISIC{year}"
    if year == 2017:
        subsets = [("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth", 3),
                   ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth", 1),
                   ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth", 2)]
        expected = {"train": 4, "test": 2, "test_labels": 2}
    else:  # 2018: test ground truth not downloaded
        subsets = [("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth", 3),
                   ("ISIC2018_Task1-2_Test_Input", None, 2)]
        expected = {"train": 3, "test": 2, "test_labels": 0}
    number = 0
    for image_dir, gt_dir, count in subsets:
        for _ in range(count):
            img, mask = _case(rng)
            stem = f"ISIC_{number:07d}"
            _save(src / image_dir / f"{stem}.jpg", _rgb(img, colour=True), quality=95)
            if year == 2017:
                _save(src / image_dir / f"{stem}_superpixels.png", _rgb(img, colour=True))
            if gt_dir:
                _save(src / gt_dir / f"{stem}_segmentation.png", mask.astype(np.uint8) * 255)
            number += 1
        (src / image_dir / "ATTRIBUTION.txt").write_text("ISIC Archive\n")
    if broken:
        img, mask = _case(rng)
        image_dir, gt_dir, _ = subsets[0]
        _save(src / image_dir / "ISIC_0009999.jpg", _rgb(img, colour=True))
        _save(src / gt_dir / "ISIC_0009999_segmentation.png", _anti_aliased(mask))
        _save(src / gt_dir / "ISIC_0008888_segmentation.png", mask.astype(np.uint8) * 255)
        expected["bad"] = ["ISIC_0009999_segmentation.png", "ISIC_0008888_segmentation.png"]
    return src, expected


def ph2(root, broken: bool = False, seed: int = 0):
    """``PH2Dataset/PH2 Dataset images/IMDxxx/IMDxxx_{Dermoscopic_Image,lesion,roi}/`` BMP files."""
    rng = np.random.default_rng(seed)
    src = Path(root) / "PH2Dataset"
    (src).mkdir(parents=True, exist_ok=True)
    (src / "PH2_dataset.txt").write_text("|| Name || Histological Diagnosis ||\n")
    names = ["IMD002", "IMD003", "IMD004"] + (["IMD005"] if broken else [])
    for name in names:
        img, mask = _case(rng)
        case = src / "PH2 Dataset images" / name
        _save(case / f"{name}_Dermoscopic_Image" / f"{name}.bmp", _rgb(img, colour=True))
        if not (broken and name == "IMD005"):
            _save(case / f"{name}_lesion" / f"{name}_lesion.bmp", mask.astype(np.uint8) * 255)
        _save(case / f"{name}_roi" / f"{name}_R1_Label4.bmp", mask.astype(np.uint8) * 255)
    expected = {"cases": 3}
    if broken:
        expected["bad"] = ["IMD005_lesion"]
    return src, expected


def tucc(root, broken: bool = False, seed: int = 0):
    """``thyroidultrasoundcineclip/dataset.hdf5`` (image, mask, annot_id, frame_num) + metadata.csv."""
    import h5py

    rng = np.random.default_rng(seed)
    src = Path(root) / "thyroidultrasoundcineclip"
    src.mkdir(parents=True, exist_ok=True)
    annots = ["1_", "2_", "2_1", "3_", "4_", "5_"]  # patient 2 has two nodules (two clips)
    rows = {"image": [], "mask": [], "annot_id": [], "frame_num": []}
    clips = [(annot, frame, False) for annot in annots for frame in range(3)] + ([("6_", 0, True)] if broken else [])
    for annot, frame, anti_aliased in clips:
        img, mask = _case(rng)
        rows["image"].append(img)
        rows["mask"].append(_anti_aliased(mask) if anti_aliased else mask.astype(np.uint8))  # the release stores 0/1
        rows["annot_id"].append(annot.encode())
        rows["frame_num"].append(frame)
    with h5py.File(src / "dataset.hdf5", "w") as f:
        for key, values in rows.items():
            f[key] = np.stack(values)
    (src / "metadata.csv").write_text("annot_id,age,sex,histopath_diagnosis\n" +
                                      "".join(f"{a},50,F,Benign\n" for a in annots))
    expected = {"cases": 18, "patients": 5}
    if broken:
        expected["bad"] = ["mask[18]"]
    return src, expected


def msd(root, broken: bool = False, seed: int = 0):
    """``Task09_Spleen/{imagesTr,labelsTr,imagesTs}/*.nii.gz`` + the MSD dataset.json."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    src = Path(root) / "Task09_Spleen"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (src / sub).mkdir(parents=True, exist_ok=True)

    def write(array, path):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.8, 0.8, 2.5))
        sitk.WriteImage(image, str(path))

    training = []
    for i in (2, 3):
        img = rng.normal(0, 100, (6, 16, 16)).astype(np.int16)
        seg = np.zeros((6, 16, 16), np.uint8)
        seg[2:4, 5:10, 5:10] = 1
        write(img, src / "imagesTr" / f"spleen_{i}.nii.gz")
        write(seg, src / "labelsTr" / f"spleen_{i}.nii.gz")
        training.append({"image": f"./imagesTr/spleen_{i}.nii.gz", "label": f"./labelsTr/spleen_{i}.nii.gz"})
    write(rng.normal(0, 100, (6, 16, 16)).astype(np.int16), src / "imagesTs" / "spleen_1.nii.gz")
    (src / "imagesTr" / "._spleen_2.nii.gz").write_bytes(b"macOS resource fork")
    (src / "dataset.json").write_text(json.dumps({
        "name": "Spleen", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "spleen"},
        "numTraining": 2, "numTest": 1, "training": training, "test": ["./imagesTs/spleen_1.nii.gz"]}))
    expected = {"train": 2, "test": 1}
    if broken:
        (src / "imagesTr" / "spleen_4.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
        expected["bad"] = ["spleen_4.nii.gz"]
    return src, expected


# ---- LIDC-IDRI ----------------------------------------------------------------------------------
def _write_dicom_series(folder: Path, patient: str, volume: np.ndarray, modality: str = "CT",
                        spacing=(2.5, 0.7, 0.7), z0: float = -100.0) -> tuple[str, list[str], list[float]]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    sops, zs = [], []
    for k, plane in enumerate(volume):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.Modality, ds.InstanceNumber = patient, modality, k + 1
        z = z0 + k * spacing[0]
        ds.ImagePositionPatient = [-10.0, -12.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (plane.astype(np.int16) + 1024).astype(np.int16).tobytes()
        # Write slices in reverse name order: the reader must sort by position, not by file name.
        ds.save_as(folder / f"1-{len(volume) - k:03d}.dcm", enforce_file_format=True)
        sops.append(sop)
        zs.append(z)
    return series, sops, zs


def _square(y0, x0, size):
    """Every outline pixel of a square, in order, as LIDC's edgeMap lists them."""
    top = [(x0 + i, y0) for i in range(size)]
    right = [(x0 + size, y0 + i) for i in range(size)]
    bottom = [(x0 + size - i, y0 + size) for i in range(size)]
    left = [(x0, y0 + size - i) for i in range(size)]
    return top + right + bottom + left


def _lidc_xml(series: str, readers: list[list[list[tuple]]]) -> str:
    """readers -> nodules -> rois (sop, z, points, inclusion)."""
    sessions = []
    for r, nodules in enumerate(readers):
        body = []
        for n, rois in enumerate(nodules):
            roi_xml = "".join(
                f"<roi><imageZposition>{z}</imageZposition><imageSOP_UID>{sop}</imageSOP_UID>"
                f"<inclusion>{'TRUE' if inc else 'FALSE'}</inclusion>"
                + "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>" for x, y in pts) + "</roi>"
                for sop, z, pts, inc in rois)
            body.append(f"<unblindedReadNodule><noduleID>Nodule {n + 1:03d}</noduleID>{roi_xml}</unblindedReadNodule>")
        sessions.append(f"<readingSession><servicingRadiologistID>{r}</servicingRadiologistID>{''.join(body)}"
                        f"</readingSession>")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<LidcReadMessage xmlns="http://www.nih.gov">'
            f"<ResponseHeader><SeriesInstanceUid>{series}</SeriesInstanceUid></ResponseHeader>"
            f"{''.join(sessions)}</LidcReadMessage>\n")


def lidc(root, broken: bool = False, seed: int = 0):
    """``LIDC-IDRI/LIDC-IDRI-000N/<study>/<series>/1-NNN.dcm`` + ``069.xml`` (three readers on one nodule)."""
    rng = np.random.default_rng(seed)
    src = Path(root) / "LIDC-IDRI"
    shape = (4, 32, 32)
    # Patient 1: readers 0, 1, 2 outline one nodule with shifted 8x8 squares on slices 1-2; reader 0 also
    # outlines a second nodule alone; reader 1 marks a < 3 mm nodule (one point), which is not segmented.
    series, sops, zs = _write_dicom_series(src / "LIDC-IDRI-0001" / "01-01-2000-NA-30178" / "3000566.000000-NA-03192",
                                           "LIDC-IDRI-0001", rng.normal(-700, 50, shape))
    on = lambda pts, ks=(1, 2), inc=True: [(sops[k], zs[k], pts, inc) for k in ks]  # noqa: E731
    readers = [[on(_square(8, 8, 8)), on(_square(22, 22, 5), ks=(3,))],
               [on(_square(10, 10, 8)), [(sops[0], zs[0], [(3, 3)], True)]],
               [on(_square(12, 12, 8)) + on(_square(13, 13, 2), ks=(1,), inc=False)]]
    (src / "LIDC-IDRI-0001" / "01-01-2000-NA-30178" / "3000566.000000-NA-03192" / "069.xml").write_text(
        _lidc_xml(series, readers))
    votes = np.zeros(shape, np.uint8)
    for y0 in (8, 10, 12):
        sq = np.zeros(shape, bool)
        sq[1:3, y0:y0 + 9, y0:y0 + 9] = True
        if y0 == 12:
            sq[1, 13:16, 13:16] = False
        votes += sq
    expected_seg = votes >= 2
    expected_seg[3, 22:28, 22:28] = True
    # Patient 2: a plain series with one reader, and a radiograph series (skipped: not CT).
    for p in (2, 3):
        s2, sops2, zs2 = _write_dicom_series(src / f"LIDC-IDRI-000{p}" / "study" / "series", f"LIDC-IDRI-000{p}",
                                             rng.normal(-700, 50, shape))
        (src / f"LIDC-IDRI-000{p}" / "study" / "series" / "100.xml").write_text(
            _lidc_xml(s2, [[[(sops2[2], zs2[2], _square(5, 5, 6), True)]]]))
    _write_dicom_series(src / "LIDC-IDRI-0002" / "study" / "dx", "LIDC-IDRI-0002", rng.normal(0, 1, (1, 8, 8)),
                        modality="DX")
    expected = {"cases": 3, "seg_0001": expected_seg}
    if broken:
        _write_dicom_series(src / "LIDC-IDRI-0004" / "study" / "series", "LIDC-IDRI-0004", rng.normal(-700, 50, shape))
        expected["bad"] = ["LIDC-IDRI-0004"]
    return src, expected


# ---- helpers for tests ------------------------------------------------------------------------------
def read_png(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def case_ids(folder, sub: str = "imagesTr") -> list[str]:
    """Case ids of a raw dataset folder (from the ``_0000`` channel files)."""
    return sorted(p.name.split("_0000.")[0] for p in (Path(folder) / sub).glob("*_0000.*"))
