"""Command-line plumbing shared by ``nnunet-synth fit`` and ``nnunet-synth generate``.

Each generator is a sub-command (``nnunet-synth generate patch-ddpm ...``) whose
own options come from the generator class. Those classes import torch, so they
are loaded only when their sub-command is parsed: ``nnunet-synth --help`` and
``nnunet-synth doctor`` stay fast and work where torch is broken.
"""
from __future__ import annotations

import argparse
from typing import Callable

from nnunet_synth.errors import SynthError
from nnunet_synth.generators import registry


class _GeneratorParser(argparse.ArgumentParser):
    """A sub-parser that adds its generator's options the first time it parses."""

    def __init__(self, *args, generator_name: str = "", class_hook: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self._generator_name = generator_name
        self._class_hook = class_hook
        self._generator_loaded = False

    def _load_generator(self) -> None:
        if self._generator_loaded:
            return
        self._generator_loaded = True
        try:
            cls = registry.get(self._generator_name)
        except SynthError as e:
            self.error(str(e))  # argparse's one-line usage error, exit status 2
        known = {action.dest for action in self._actions}
        # The generator gets the parser itself: it may make its own argument groups.
        getattr(cls, self._class_hook)(self)
        own = sorted({action.dest for action in self._actions} - known)
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        if doc:
            self.description = f"{self.description or ''}\n\n{self._generator_name}: {doc}".strip()
        self.set_defaults(generator_class=cls, generator_option_names=own)

    def parse_known_args(self, args=None, namespace=None):
        self._load_generator()
        return super().parse_known_args(args, namespace)


def add_generator_subcommands(parser: argparse.ArgumentParser, class_hook: str,
                              add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """One sub-command per registered generator, each with the common options and its own.

    ``class_hook`` names the Generator classmethod that adds the generator's
    options (``add_fit_arguments`` or ``add_generate_arguments``).
    """
    sub = parser.add_subparsers(dest="generator", metavar="GENERATOR", parser_class=_GeneratorParser)
    sub.required = True
    for name in registry.names():
        p = sub.add_parser(name, help=f"the {name} generator (options: GENERATOR --help)",
                           description=parser.description, formatter_class=argparse.RawDescriptionHelpFormatter,
                           generator_name=name, class_hook=class_hook)
        add_common(p)


def generator_options(args: argparse.Namespace) -> dict:
    """The generator's own options, as parsed (what a manifest or a resume check records)."""
    return {name: _plain(getattr(args, name)) for name in args.generator_option_names}


def _plain(value):
    """A JSON-friendly copy (paths and tuples become strings and lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)



def add_dataset_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--dataset", required=True, metavar="REAL",
                   help="the real raw dataset: id (901), name (Dataset901_X) or folder")
