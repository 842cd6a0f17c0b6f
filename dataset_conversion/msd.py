"""Medical Segmentation Decathlon task (Antonelli et al., 2022) -> nnU-Net, with nnU-Net's own converter.

Source layout (one extracted task tarball, e.g. Task09_Spleen.tar or
Task05_Prostate.tar from medicaldecathlon.com):

    Task09_Spleen/
        dataset.json                 MSD format: "modality", "labels", "training", "test"
        imagesTr/spleen_2.nii.gz     3D, or 4D for multi-modal tasks (prostate: T2, ADC)
        labelsTr/spleen_2.nii.gz
        imagesTs/spleen_1.nii.gz     (no public labels)

The conversion itself is ``nnunetv2.dataset_conversion.convert_MSD_dataset``
(4D images are split into ``_0000``, ``_0001``, ... channels; labels and
channel names come from the task's dataset.json). This wrapper adds what the
other converters do: the source files are header-checked first and every
unreadable one is listed; the result is written to a hidden folder, verified
and renamed. ``--allow-skip`` is not supported here, because nnU-Net's
converter takes the whole folder: fix or remove the listed files.
The dataset name defaults to the task name (``Task09_Spleen`` -> ``Spleen``).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from nnunet_synth.atomic import read_json
from nnunet_synth.errors import SynthError

SUBFOLDERS = ("imagesTr", "labelsTr", "imagesTs")


def dataset_name(source: Path) -> str:
    parts = Path(source).resolve().name.split("_")
    if len(parts) != 2 or not parts[0].startswith("Task"):
        raise SynthError(f"{source}: an MSD task folder is named TaskNN_Name (e.g. Task09_Spleen)")
    return parts[1]


def check_sources(source: Path, problems) -> None:
    """Read every NIfTI header; nnU-Net's converter would stop at the first bad file with a bare traceback."""
    import SimpleITK as sitk

    for sub in SUBFOLDERS:
        if not (source / sub).is_dir():
            raise SynthError(f"{source}: no {sub}/ folder (see 'nnunet-synth convert msd --help')")
    read_json(source / "dataset.json", "pass the extracted MSD task folder (TaskNN_Name)")
    for sub in SUBFOLDERS:
        for path in sorted((source / sub).glob("*.nii.gz")):
            if path.name.startswith((".", "_")):
                continue  # nnU-Net's converter ignores these too (macOS ._ files)
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            try:
                reader.ReadImageInformation()
            except RuntimeError as e:
                problems.add(path, f"unreadable NIfTI header ({str(e).strip().splitlines()[-1]})")
        if sub == "labelsTr":
            images = {p.name for p in (source / "imagesTr").glob("*.nii.gz") if not p.name.startswith((".", "_"))}
            labels = {p.name for p in (source / sub).glob("*.nii.gz") if not p.name.startswith((".", "_"))}
            for name in sorted(images - labels):
                problems.add(source / "imagesTr" / name, "training image without a label in labelsTr/")


def convert(source: Path, ds) -> None:
    import nnunetv2.dataset_conversion.convert_MSD_dataset as msd

    check_sources(source, ds.problems)
    if ds.problems.problems:
        ds.allow_skip = False  # see the module docstring
        ds.check_problems()
    # nnU-Net's converter writes to nnunetv2.paths.nnUNet_raw (read into its module at import); point it at a
    # scratch folder next to our staging folder and move the result in, so that the target appears atomically.
    scratch = Path(tempfile.mkdtemp(prefix=".msd-", dir=ds.folder.parent))
    saved = msd.nnUNet_raw
    try:
        msd.nnUNet_raw = str(scratch)
        try:
            msd.convert_msd_dataset(str(source.resolve()), overwrite_target_id=ds.dataset_id,
                                    num_processes=ds.num_processes)
        except AssertionError as e:
            raise SynthError(f"{source}: nnU-Net's MSD converter refused it ({e})") from None
        produced = scratch / f"Dataset{ds.dataset_id:03d}_{dataset_name(source)}"
        for item in produced.iterdir():
            target = ds.folder / item.name
            if target.is_dir():
                target.rmdir()  # the empty staging subfolder
            shutil.move(str(item), str(target))
    finally:
        msd.nnUNet_raw = saved
        shutil.rmtree(scratch, ignore_errors=True)
    dataset_json = read_json(ds.folder / "dataset.json")
    n_ts = len(list((ds.folder / "imagesTs").glob("*_0000.nii.gz"))) if (ds.folder / "imagesTs").is_dir() else 0
    ds.record_counts(dataset_json["numTraining"], n_ts)


if __name__ == "__main__":
    import sys

    from nnunet_synth.commands.convert import script_main

    raise SystemExit(script_main(sys.modules[__name__]))
