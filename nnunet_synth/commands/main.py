"""``nnunet-synth``: the entry point that dispatches to one command module.

Only the module of the command being run is imported; ``nnunet-synth --help``
imports none of them, so it is fast and works where torch is broken.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from nnunet_synth import __version__
from nnunet_synth.commands import COMMANDS
from nnunet_synth.commands.options import escape
from nnunet_synth.commands.runner import PROG, run_parsed


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command`` (if given) gets its module's options."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Diffusion-synthesized image-mask pairs for nnU-Net v2. "
                    f"Run '{PROG} COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        if name != command:
            sub.add_parser(name, help=escape(help_text), add_help=False)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=escape(help_text), description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _command_in(argv: list[str]) -> str | None:
    # The first word that is not an option is the command (top-level options take no values).
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    return run_parsed(args.command, args._run, args)


if __name__ == "__main__":
    sys.exit(main())
