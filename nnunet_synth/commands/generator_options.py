"""Options of ``nnunet-synth fit`` / ``generate``: one sub-command per generator, options from its settings.

Each generator is a sub-command (``nnunet-synth generate patch-ddpm ...``). Its
own options come from the fields of its settings dataclasses: the option name
is the field's (``--patch-size`` for ``patch_size``) unless the field's
metadata gives a ``flag`` (``required: True`` makes it required); the help text is the metadata's ``help`` plus the
field's default. Generator classes are imported only when their sub-command is
parsed, so ``nnunet-synth fit --help`` lists them without importing any.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Callable

from nnunet_synth.commands.options import escape
from nnunet_synth.errors import SynthError
from nnunet_synth.generators import registry


def _field_type(cls, f: dataclasses.Field):
    """(scalar type, is a tuple) of a field annotated like ``int``, ``float | None`` or ``tuple[int, ...] | None``."""
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
    if len(args) != 1:
        raise TypeError(f"{cls.__name__}.{f.name}: a settings field needs one type, got {hint}")
    hint = args[0]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def add_settings_arguments(parser: argparse.ArgumentParser, settings_class, title: str) -> list[str]:
    """An argument group with one option per field of ``settings_class``; returns the fields' names."""
    fields = dataclasses.fields(settings_class)
    if not fields:
        return []
    group = parser.add_argument_group(title)
    for f in fields:
        meta = dict(f.metadata)
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        kind, is_tuple = _field_type(settings_class, f)
        text = meta.get("help", "")
        if kind is bool:
            if f.default is not False:
                raise TypeError(f"{settings_class.__name__}.{f.name}: a boolean option must default to False")
            group.add_argument(flag, dest=f.name, action="store_true", help=escape(text))
            continue
        default = f.default
        if default is not None and "(default" not in text:
            shown = ", ".join(map(str, default)) if isinstance(default, tuple) else default
            shown = shown if shown != "" else "empty"
            text = f"{text} (default {shown})"
        kwargs = dict(dest=f.name, type=kind, default=default, help=escape(text))
        if "choices" in meta:
            kwargs["choices"] = meta["choices"]
        if "metavar" in meta:
            kwargs["metavar"] = meta["metavar"]
        if is_tuple:
            kwargs["nargs"] = "+"
        if meta.get("required"):
            kwargs["required"] = True
            kwargs["help"] = escape(meta.get("help", "") + " (required)")
        group.add_argument(flag, **kwargs)
    return [f.name for f in fields]


def settings_from_args(settings_class, args: argparse.Namespace):
    """The settings dataclass filled from parsed options (lists become tuples)."""
    values = {}
    for f in dataclasses.fields(settings_class):
        value = getattr(args, f.name)
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return settings_class(**values)


class _GeneratorParser(argparse.ArgumentParser):
    """A sub-parser that adds its generator's options the first time it parses."""

    def __init__(self, *args, generator_name: str = "", settings_attribute: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self._generator_name = generator_name
        self._settings_attribute = settings_attribute
        self._generator_loaded = False

    def _load_generator(self) -> None:
        if self._generator_loaded:
            return
        self._generator_loaded = True
        try:
            cls = registry.get(self._generator_name)
        except SynthError as e:
            self.error(str(e))  # argparse's one-line usage error, exit status 2
        settings_class = getattr(cls, self._settings_attribute)
        add_settings_arguments(self, settings_class, f"{self._generator_name} options")
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        if doc:
            self.description = f"{self.description or ''}\n\n{self._generator_name}: {doc}".strip()
        self.set_defaults(generator_class=cls, settings_class=settings_class)

    def parse_known_args(self, args=None, namespace=None):
        self._load_generator()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._load_generator()
        return super().format_help()


def add_generator_subcommands(parser: argparse.ArgumentParser, settings_attribute: str,
                              add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """One sub-command per registered generator, each with the common options and its own.

    ``settings_attribute`` names the Generator class attribute holding the
    settings dataclass (``fit_settings`` or ``generate_settings``).
    """
    sub = parser.add_subparsers(dest="generator", metavar="GENERATOR", parser_class=_GeneratorParser)
    sub.required = True
    for name in registry.names():
        p = sub.add_parser(name, help=f"the {name} generator (options: GENERATOR --help)",
                           description=parser.description, formatter_class=argparse.RawDescriptionHelpFormatter,
                           generator_name=name, settings_attribute=settings_attribute)
        add_common(p)


def add_dataset_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--dataset", required=True, metavar="REAL",
                   help="the real raw dataset: id (901), name (Dataset901_X) or folder")
