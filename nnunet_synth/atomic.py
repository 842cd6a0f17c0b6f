"""Atomic file writes: a temporary file in the target folder, then a rename.

A reader (or a resumed run) therefore sees either the complete file or none.
Temporary names start with ``.tmp-`` and keep the target's full file ending
(``.nii.gz`` included), because writers such as SimpleITK pick the format from
the ending.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMP_PREFIX = ".tmp-"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{path.name}"
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{path}: the writer produced no file")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike, obj, sort_keys: bool = False) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=sort_keys)
            f.write("\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def remove_stale_temp_files(folder: str | os.PathLike, targets=None) -> int:
    """Delete temporary files that a killed writer left behind; returns how many.

    With ``targets`` (file names), only the leftovers of those files are
    removed, so processes writing other files into the same folder are safe.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    targets = None if targets is None else {Path(t).name for t in targets}
    stale = [p for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX) and p.is_file()
             and (targets is None or p.name.split("-", 2)[-1] in targets)]
    for p in stale:
        p.unlink()
    return len(stale)


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Refuse, before anything is written, a folder that cannot be created or written into.

    ``path`` is a folder that will hold output (it need not exist yet);
    ``what`` says which option or variable named it (``"-o "``, ``"nnUNet_raw="``).
    """
    from nnunet_synth.errors import SynthError

    path = Path(path).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        shown = "" if existing == path else f" ({existing} is a file)"
        raise SynthError(f"{what}{path}: not a folder{shown}; choose another location")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SynthError(f"{what}{path}: {existing} is not writable (read-only file system or no permission); "
                         f"choose a writable location")


def read_json(path: str | os.PathLike, hint: str = ""):
    """The parsed content of a JSON file, or a one-line SynthError naming the file.

    ``hint`` (what to do about it) is appended to the message.
    """
    from nnunet_synth.errors import SynthError

    path = Path(path)
    suffix = f"; {hint}" if hint else ""
    if not path.is_file():
        raise SynthError(f"{path}: missing{suffix}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SynthError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}){suffix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SynthError(f"{path}: cannot be read ({type(e).__name__}){suffix}") from None


def same_json(a, b) -> bool:
    """Equality after a JSON round trip (tuples become lists, keys become strings)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def new_file_mode() -> int:
    """The mode a new file gets from open() under this process's umask (0644 under the usual 022)."""
    # os.umask is the only portable way to read the umask; it is set back at once.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def give_files_the_umask_mode(folder: str | os.PathLike) -> None:
    """Every file under ``folder`` gets ``new_file_mode()``: safetensors writes its files 0600."""
    mode = new_file_mode()
    for path in Path(folder).rglob("*"):
        if path.is_file():
            path.chmod(mode)
