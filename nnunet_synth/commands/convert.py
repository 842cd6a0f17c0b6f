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
import sys

from nnunet_synth.commands.options import add_output_argument, escape, refuse_device
from nnunet_synth.convert.registry import CONVERTERS, load_converter
from nnunet_synth.convert.run import run_converter
from nnunet_synth.errors import SynthError


class _ConverterParser(argparse.ArgumentParser):
    """The sub-parser of one converter: it imports its script only when that converter is parsed.

    The scripts import numpy, Pillow and nnU-Net; ``nnunet-synth convert --help``
    lists every converter from the registry's table without importing any.
    """

    def __init__(self, *args, converter_name: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self._converter_name = converter_name
        self._converter_loaded = False

    def _load_converter(self) -> None:
        if self._converter_loaded:
            return
        self._converter_loaded = True
        try:
            module = load_converter(self._converter_name)
        except SynthError as e:
            self.error(str(e))  # argparse's one-line usage error, exit status 2
        if module.__doc__:
            self.description = module.__doc__.strip()
        self.set_defaults(converter_options=add_converter_arguments(self, module))

    def parse_known_args(self, args=None, namespace=None):
        self._load_converter()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._load_converter()
        return super().format_help()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="NAME", parser_class=_ConverterParser)
    sub.required = True
    for name, (_, help_text) in CONVERTERS.items():
        # argparse %-formats help (not descriptions): the table's '50%' must reach it as '50%%'.
        sub.add_parser(name, help=escape(help_text), description=help_text, converter_name=name,
                       formatter_class=argparse.RawDescriptionHelpFormatter)


def run(args: argparse.Namespace) -> int:
    convert(load_converter(args.dataset), args)
    return 0


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE_DIR", help="the dataset as downloaded and extracted")
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, metavar="ID",
                        help="dataset id of the result, DatasetID_Name (1..999)")
    add_output_argument(parser, "dir", "RAW_DIR", "the nnU-Net raw folder to write into (default: $nnUNet_raw)",
                        dest="raw_root", default=None)
    parser.add_argument("--name", default=None, help="dataset name after DatasetXXX_ (default: the converter's)")
    parser.add_argument("--allow-skip", action="store_true",
                        help="leave out files with problems (listed at the end) instead of stopping")
    parser.add_argument("-np", dest="num_processes", type=int, default=1,
                        help="worker processes for converting and verifying (default: 1)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip nnU-Net's verify_dataset_integrity on the result")
    refuse_device(parser, "convert has no device option: it runs on the CPU (-np sets the processes)")


def add_converter_arguments(parser: argparse.ArgumentParser, module) -> list[str]:
    """The common options and the converter's own; returns the ``dest`` names of its own."""
    add_common_arguments(parser)
    common = {action.dest for action in parser._actions}
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    return sorted({action.dest for action in parser._actions} - common)


def convert(module, args: argparse.Namespace) -> None:
    options = {name: getattr(args, name) for name in args.converter_options}
    run_converter(module, args.source, args.dataset_id, args.raw_root, args.allow_skip, args.num_processes,
                  args.name, args.verify, options)


def script_main(module) -> int:
    """The ``__main__`` block of a converter script: the same options as ``nnunet-synth convert NAME``."""
    parser = argparse.ArgumentParser(description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(converter_options=add_converter_arguments(parser, module))
    args = parser.parse_args()
    try:
        convert(module, args)
    except SynthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
