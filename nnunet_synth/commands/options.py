"""Option spellings the commands share: nnU-Net's aliases, ``-device``, and what ``-o`` takes.

nnU-Net users type ``-device``, ``-f``, ``-c``, ``-p`` and ``-np``; the commands
accept those spellings beside their own. ``-o`` always says what it takes, in
its metavar and at the start of its help: a dataset id (``-o ID``, as the
``nnUNetv2_*`` commands name outputs), a folder (``-o DIR``) or a file
(``-o FILE``). README.md ("What -o means") states the rule for users;
tests/test_cli_help.py holds every command to it.
"""
from __future__ import annotations

import argparse
import re

# kind -> (what the help starts with, how the metavar ends)
OUTPUT_KINDS: dict[str, tuple[str, str]] = {
    "id": ("a dataset id", "ID"),
    "dir": ("a folder", "DIR"),
    "file": ("a file", "FILE"),
}


def says_kind(metavar: str, kind: str) -> bool:
    """Whether an ``-o`` metavar names its kind: ``ID``/``SYNTH_ID``, ``DIR``/``MODEL_DIR``, ``FILE``/``FILE.json``."""
    return re.search(rf"(^|_){OUTPUT_KINDS[kind][1]}(\.\w+)?$", metavar or "") is not None


def escape(text: str) -> str:
    """Help text for argparse, which %-formats it: a literal '%' (as in '50%') must be doubled."""
    return text.replace("%", "%%")


def add_output_argument(parser, kind: str, metavar: str, text: str, *long_names: str, **kwargs) -> None:
    """``-o`` (and ``long_names``) taking a dataset id, a folder or a file, and saying which."""
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"-o kind {kind!r}: one of {', '.join(OUTPUT_KINDS)}")
    what, suffix = OUTPUT_KINDS[kind]
    if not says_kind(metavar, kind):
        raise ValueError(f"-o {metavar}: the metavar of {what} ends in {suffix} (or {suffix}.ext for a file)")
    if kind == "id":
        kwargs.setdefault("type", int)
    parser.add_argument("-o", *long_names, metavar=metavar, help=f"{what}: {text}", **kwargs)


def add_device_argument(parser, text: str, **kwargs) -> None:
    """``--device`` with nnU-Net's spelling ``-device`` beside it.

    Without the alias, a parser that also has ``-d`` reads ``-device cpu`` as
    ``-d evice`` followed by a stray ``cpu``.
    """
    parser.add_argument("-device", "--device", dest="device", help=text, **kwargs)


class _Refused(argparse.Action):
    def __init__(self, option_strings, dest, reason: str = "", **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.reason = reason

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string}: {self.reason}")


def refuse_device(parser, reason: str) -> None:
    """A command without a device option: ``-device X`` gets ``reason`` instead of being read as ``-d evice``."""
    parser.add_argument("-device", "--device", dest="_refused_device", nargs="?", action=_Refused, reason=reason,
                        help=argparse.SUPPRESS)
