"""NAME -> converter script in ``dataset_conversion/``: a table of module names, nothing imported.

The scripts ship as the package ``nnunet_synth_dataset_conversion`` (setup.py
maps the folder, as it does for ``trainers/``), so they are importable by name
from a checkout and from an installed wheel alike, and spawned worker
processes can import them too. A script is imported only when it is asked
for (``load_converter``): listing the converters imports none of them.

The converter contract. A converter module defines:

- its docstring: the source layout it reads (the ``--help`` description);
- ``NAME``: the default dataset name (``DatasetXXX_NAME``), or a function
  ``dataset_name(source) -> str`` when the name comes from the source;
- ``convert(source: Path, ds: StagedDataset, **options) -> None``: enumerate
  the cases, ``ds.convert(per_case_function, cases)``, optionally
  ``ds.write_splits(...)``, and end with ``generate_dataset_json(ds.folder, ...)``.
  ``options`` are the converter's own options as plain keyword arguments
  (``frame_step=2``), each with its default in the signature, so that
  ``run_converter(module, ..., options={"frame_step": 2})`` works without a
  command line;
- optionally ``add_arguments(parser)``: its own command-line options, whose
  ``dest`` names are the keyword arguments of ``convert``.
"""
from __future__ import annotations

import importlib

from nnunet_synth.errors import SynthError

PACKAGE = "nnunet_synth_dataset_conversion"

# name -> (module in dataset_conversion/, one-line help)
CONVERTERS: dict[str, tuple[str, str]] = {
    "ddti": ("ddti", "DDTI thyroid ultrasound: original XML polygons, image/ + mask/ PNGs, or nodule crops"),
    # The thyroid SD paper's "TDID" (Thyroid Digital Image Database) is the same
    # Pedraza et al. database that most papers call DDTI.
    "tdid": ("ddti", "TDID = DDTI (the Thyroid Digital Image Database of Pedraza et al.); same layouts as 'ddti'"),
    "tn3k": ("tn3k", "TN3K thyroid ultrasound (trainval/test folders and fold files)"),
    "tucc": ("tucc", "Stanford AIMI thyroid ultrasound cine-clip (dataset.hdf5)"),
    "busi": ("busi", "BUSI breast ultrasound (class folders, several _mask files per image)"),
    "isic2017": ("isic2017", "ISIC 2017 skin lesion segmentation (part 1)"),
    "isic2018": ("isic2018", "ISIC 2018 skin lesion segmentation (task 1)"),
    "ph2": ("ph2", "PH2 dermoscopy (IMDxxx folders with _lesion masks)"),
    "msd": ("msd", "Medical Segmentation Decathlon task folder, through nnU-Net's own converter"),
    "lidc-idri": ("lidc_idri", "LIDC-IDRI lung CT: DICOM series and reader XML, 50% reader consensus"),
}


def load_converter(name: str):
    """The converter module registered as ``name``."""
    if name not in CONVERTERS:
        raise SynthError(f"unknown dataset {name!r}; known: {', '.join(sorted(CONVERTERS))}")
    module = f"{PACKAGE}.{CONVERTERS[name][0]}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name not in (PACKAGE, module):
            raise
        raise SynthError(f"{module} is not installed; run 'pip install -e .' in the nnunet_synth checkout "
                         f"(setup.py ships dataset_conversion/ as {PACKAGE})") from None
