"""Run one converter: check the arguments, stage, convert, verify, rename."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from nnunet_synth.errors import SynthError


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE_DIR", help="the dataset as downloaded and extracted")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1..999)")
    parser.add_argument("-o", dest="raw_root", default=None,
                        help="nnU-Net raw folder to write into (default: $nnUNet_raw)")
    parser.add_argument("--name", default=None, help="dataset name after DatasetXXX_ (default: the converter's)")
    parser.add_argument("--allow-skip", action="store_true",
                        help="leave out files with problems (listed at the end) instead of stopping")
    parser.add_argument("-np", dest="num_processes", type=int, default=1,
                        help="worker processes for converting and verifying (default: 1)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip nnU-Net's verify_dataset_integrity on the result")


def run_converter(module, source, dataset_id: int, raw_root=None, allow_skip: bool = False,
                  num_processes: int = 1, name: str | None = None, verify: bool = True,
                  options: argparse.Namespace | None = None) -> Path:
    """Convert ``source`` with a converter module; returns the new raw dataset folder."""
    from nnunet_synth.convert.staging import StagedDataset

    source = Path(source)
    if not source.exists():
        raise SynthError(f"{source}: source folder not found")
    raw_root = raw_root or os.environ.get("nnUNet_raw")
    if not raw_root:
        raise SynthError("no output folder: set nnUNet_raw or pass -o RAW_ROOT")
    if name is None:
        name = module.dataset_name(source) if hasattr(module, "dataset_name") else module.NAME
    options = options if options is not None else argparse.Namespace()
    with StagedDataset(raw_root, dataset_id, name, source, allow_skip=allow_skip, num_processes=num_processes,
                       verify=verify, preprocessed_root=os.environ.get("nnUNet_preprocessed")) as ds:
        module.convert(source, ds, options)
    return ds.final


def script_main(module) -> int:
    """The ``__main__`` block of a converter script: the same options as ``nnunet-synth convert NAME``."""
    import sys

    parser = argparse.ArgumentParser(description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    args = parser.parse_args()
    try:
        run_converter(module, args.source, args.dataset_id, args.raw_root, args.allow_skip, args.num_processes,
                      args.name, args.verify, args)
    except SynthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
