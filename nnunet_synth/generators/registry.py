"""Generator names and where their classes live.

Classes are imported only when a generator is used, so listing the names (for
``--help``) does not import torch or diffusers. Entries are ``"module:Class"``
strings or classes. Generators outside this package can be added with
:func:`register`, or, for subprocesses, through the ``NNUNET_SYNTH_GENERATORS``
environment variable: ``name=module:Class`` entries separated by commas.
"""
from __future__ import annotations

import importlib
import os

from nnunet_synth.errors import SynthError

ENV_VAR = "NNUNET_SYNTH_GENERATORS"

_BUILTIN: dict[str, object] = {
    "patch-ddpm": "nnunet_synth.generators.patch_ddpm:PatchDDPMGenerator",
    "controlnet": "nnunet_synth.generators.controlnet:ControlNetGenerator",
    "sd-inpaint": "nnunet_synth.generators.sd_inpaint:SDInpaintGenerator",
    "meddiff-ft": "nnunet_synth.generators.meddiff_ft:MedDiffFTGenerator",
}
_registered: dict[str, object] = {}


def register(name: str, target) -> None:
    """Make ``name`` refer to ``target`` (a ``"module:Class"`` string or a Generator subclass)."""
    if isinstance(target, str) and ":" not in target:
        raise ValueError(f"generator target {target!r} must look like 'module:Class'")
    _registered[name] = target


def unregister(name: str) -> None:
    _registered.pop(name, None)


def _from_environment() -> dict[str, str]:
    entries = {}
    for item in filter(None, (s.strip() for s in os.environ.get(ENV_VAR, "").split(","))):
        name, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise SynthError(f"{ENV_VAR}: entry {item!r} must look like 'name=module:Class'")
        entries[name.strip()] = target.strip()
    return entries


def _table() -> dict[str, object]:
    # Later sources win: explicit register() calls override the environment and built-ins.
    return {**_BUILTIN, **_from_environment(), **_registered}


def names() -> list[str]:
    return sorted(_table())


def get(name: str):
    """The Generator subclass registered as ``name``."""
    table = _table()
    if name not in table:
        raise SynthError(f"unknown generator {name!r}; known generators: {', '.join(sorted(table))}")
    target = table[name]
    if not isinstance(target, str):
        return target
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise SynthError(f"generator {name!r}: module {module_name} is not installed ({e})") from e
        raise
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise SynthError(f"generator {name!r}: {module_name} has no class {class_name}") from None
