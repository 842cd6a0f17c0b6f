"""Convert a public dataset, as downloaded, into an nnU-Net raw dataset.

Each NAME has its own options and a description of the source layout it
expects: run 'nnunet-synth convert NAME --help'. The result is written to a
hidden folder, checked with nnU-Net's verify_dataset_integrity and only then
renamed to DatasetXXX_Name, so a failed run leaves nothing behind. Problems in
the source data (unreadable files, masks of another size, anti-aliased masks)
are listed per file; by default the conversion stops, with --allow-skip those
files are left out.

Datasets with several images per patient (DDTI, TUCC, LIDC-IDRI) get a
patient-grouped splits_final.json in $nnUNet_preprocessed/DatasetXXX_Name/ (a
copy stays in the raw folder).

Example:
  nnunet-synth convert ddti ~/Downloads/ddti_crop -d 501
  nnunet-synth convert busi ~/Downloads/Dataset_BUSI_with_GT -d 502 --allow-skip
"""
from __future__ import annotations

import argparse

from nnunet_synth.convert.registry import CONVERTERS, load_converter
from nnunet_synth.convert.run import run_converter
from nnunet_synth.errors import SynthError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="NAME")
    sub.required = True
    for name, (_, help_text) in CONVERTERS.items():
        module = load_converter(name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common_arguments(p)
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    run_converter(load_converter(args.dataset), args.source, args.dataset_id, args.raw_root, args.allow_skip,
                  args.num_processes, args.name, args.verify, args)
    return 0


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
