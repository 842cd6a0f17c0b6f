"""TUCC: Stanford AIMI Thyroid Ultrasound Cine-clip dataset -> nnU-Net.

Source layout (the AIMI download, SOURCE_DIR = the folder holding both files):

    thyroidultrasoundcineclip/
        dataset.hdf5    image     (N, H, W) uint8   one cine-clip frame per row
                        mask      (N, H, W) uint8   radiologist nodule mask of that frame (0 / non-zero)
                        annot_id  (N,) bytes        the annotated nodule, e.g. b"100_"
                        frame_num (N,) int          frame number within the clip
        metadata.csv    annot_id, age, sex, TI-RADS descriptors, histopath_diagnosis (not needed here)

192 nodules of 167 patients, about 17,000 frames. Each kept frame becomes one
2D case ``tucc_{annot}_{frame:04d}``, one grayscale PNG channel. The patient is
the part of ``annot_id`` before the first underscore, so the nodules (clips) of
one patient share one side of every fold in ``splits_final.json``. Consecutive
frames are nearly identical; ``--frame-step K`` keeps every K-th frame of each
clip (default 1: all frames).

Labels: 0 background, 1 nodule (the one non-zero mask value); masks with more
than one non-zero value are reported. There is no official test split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_synth.convert import Case, CaseProblem
from nnunet_synth.convert.images import binarize, write_png_case
from nnunet_synth.convert.splits import grouped_kfold
from nnunet_synth.errors import SynthError

NAME = "TUCC"
KEYS = ("image", "mask", "annot_id", "frame_num")
_open_files: dict[str, object] = {}


def add_arguments(parser) -> None:
    parser.add_argument("--frame-step", type=int, default=1, help="keep every K-th frame of each clip (default 1)")


def _h5(path: str):
    # One open handle per worker process; reopening for every frame would dominate the run time.
    import h5py

    if path not in _open_files:
        _open_files[path] = h5py.File(path, "r")
    return _open_files[path]


def _gray_frame(frame: np.ndarray, where: str) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and 3 in (frame.shape[0], frame.shape[-1]):
        channels = np.moveaxis(frame, 0, -1) if frame.shape[0] == 3 else frame
        if (channels == channels[..., :1]).all():
            return np.ascontiguousarray(channels[..., 0])
    raise CaseProblem(where, f"frame of shape {frame.shape} is not a grayscale image")


def convert_case(case: Case, folder: str):
    h5_path, row = case.info["h5"], case.info["row"]
    try:
        f = _h5(h5_path)
        image, mask = f["image"][row], f["mask"][row]
    except OSError as e:
        raise CaseProblem(f"{h5_path}:image[{row}]", f"unreadable HDF5 row ({e})") from None
    image = _gray_frame(image, f"{h5_path}:image[{row}]")
    mask = _gray_frame(mask, f"{h5_path}:mask[{row}]")
    if mask.shape != image.shape:
        raise CaseProblem(f"{h5_path}:mask[{row}]", f"mask shape {mask.shape} differs from image shape {image.shape}")
    seg = binarize(mask, f"{h5_path}:mask[{row}]", lossy=False)
    write_png_case(folder, case.split, case.case_id, image, seg)


def find_cases(source: Path, problems, frame_step: int) -> list[Case]:
    import h5py

    h5_path = source / "dataset.hdf5" if source.is_dir() else source
    if not h5_path.is_file():
        raise SynthError(f"{source}: no dataset.hdf5 (see 'nnunet-synth convert tucc --help')")
    if frame_step < 1:
        raise SynthError(f"--frame-step must be >= 1, got {frame_step}")
    try:
        with h5py.File(h5_path, "r") as f:
            missing = [k for k in KEYS if k not in f]
            if missing:
                raise SynthError(f"{h5_path}: missing dataset(s) {', '.join(missing)}; expected {', '.join(KEYS)}")
            lengths = {k: len(f[k]) for k in KEYS}
            if len(set(lengths.values())) != 1:
                raise SynthError(f"{h5_path}: datasets have different lengths {lengths}")
            annot_ids = [a.decode() if isinstance(a, bytes) else str(a) for a in np.asarray(f["annot_id"]).ravel()]
            frames = np.asarray(f["frame_num"]).ravel().astype(int)
    except OSError as e:
        raise SynthError(f"{h5_path}: not a readable HDF5 file ({e})") from None
    cases = []
    for row, (annot, frame) in enumerate(zip(annot_ids, frames)):
        if frame % frame_step:
            continue
        annot = annot.strip()
        patient = annot.split("_")[0]
        if not patient:
            problems.add(f"{h5_path}:annot_id[{row}]", f"annot_id {annot!r} names no patient")
            continue
        nodule = annot.strip("_").replace("_", "-") or patient
        cases.append(Case(f"tucc_{nodule}_{frame:04d}", "Tr", (f"{h5_path}:image[{row}]",), patient,
                          {"h5": str(h5_path), "row": row}))
    return cases


def convert(source: Path, ds, frame_step: int = 1) -> None:
    cases = find_cases(source, ds.problems, frame_step)
    try:
        converted = ds.convert(convert_case, cases, desc="TUCC frames")
    finally:
        while _open_files:
            _open_files.popitem()[1].close()
    patients = {c.case_id: c.patient for c in converted}
    ds.write_splits(grouped_kfold(list(patients), list(patients.values())), patients)
    generate_dataset_json(str(ds.folder), {0: "US"}, {"background": 0, "nodule": 1}, ds.num_training, ".png",
                          dataset_name=ds.name, reference="https://doi.org/10.71718/7m5n-rh16",
                          license="Stanford University Dataset Research Use Agreement",
                          converted_by="nnunet-synth convert tucc",
                          description=f"Stanford thyroid ultrasound cine-clip frames (every "
                                      f"{frame_step}. frame); folds grouped by patient",
                          source_mask_mapping={"0": "background (0)", "non-zero": "nodule (1)"})


if __name__ == "__main__":
    import sys

    from nnunet_synth.commands.convert import script_main

    raise SystemExit(script_main(sys.modules[__name__]))
