"""Reading the files evaluation scores, and writing its outputs, with one-line errors.

- ``read_seg`` / ``read_images``: nnU-Net's reader-writer, but an empty,
  truncated or unreadable file, or a segmentation with several channels (an
  RGB or vector image), is a ``SynthError`` that names the file and says what
  is wrong, instead of the reader's traceback or a shape mismatch later on.
- ``check_output_file``: evaluation never replaces a file it did not write
  (nnU-Net's own ``summary.json`` in ``fold_X/validation`` for example) unless
  asked to, and finds a folder it cannot write to before it scores anything.
  Files it writes carry ``WRITTEN_BY``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from nnunet_synth import __version__
from nnunet_synth.atomic import check_writable
from nnunet_synth.errors import SynthError

WRITTEN_BY_KEY = "written_by"
WRITTEN_BY = f"nnunet_synth {__version__}"
OLD_SUMMARY_KEYS = {"n_valid", "spacing_unit", "unmatched_predictions"}


def _reason(error: BaseException) -> str:
    """The last non-empty line of a reader's message (SimpleITK's are several lines long)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text.replace("sitk::ERROR: ", "")


def _check_not_empty(path: Path, where: str, what: str) -> None:
    if not path.is_file():
        raise SynthError(f"{where}: {what} {path} is missing")
    if path.stat().st_size == 0:
        raise SynthError(f"{where}: {what} {path} is empty (0 bytes)")


def _vector_components(path: Path) -> int:
    """Components per pixel from the file header, for formats SimpleITK reads (1 where it cannot tell)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return 1  # not a format SimpleITK reads: nnU-Net's reader has already read it, so it is not corrupt
    return int(reader.GetNumberOfComponents())


def read_seg(reader_writer, path: str | os.PathLike, where: str, what: str = "segmentation"):
    """``reader_writer.read_seg(path)`` with a one-line error for a file that is not a one-channel label map."""
    path = Path(path)
    _check_not_empty(path, where, what)
    try:
        seg, props = reader_writer.read_seg(str(path))
    except Exception as e:  # readers raise RuntimeError, SyntaxError, OSError, ...: all mean "cannot read"
        raise SynthError(f"{where}: {what} {path} cannot be read ({_reason(e)}); is it truncated, or not a "
                         f"{''.join(path.suffixes) or 'valid'} file?") from None
    components = _vector_components(path)
    if seg.shape[0] != 1 or components > 1:
        n = seg.shape[0] if seg.shape[0] != 1 else components
        raise SynthError(f"{where}: {what} {path} has {n} channels per pixel (an RGB or multi-channel image); "
                         f"a segmentation has one label value per pixel")
    return seg, props


def read_images(reader_writer, files: list[str], where: str, what: str = "image"):
    """``reader_writer.read_images(files)`` with a one-line error naming the unreadable file."""
    for f in files:
        _check_not_empty(Path(f), where, what)
    try:
        return reader_writer.read_images(files)
    except Exception as e:  # as in read_seg
        # Read them one by one to name the bad one.
        for f in files:
            try:
                reader_writer.read_images([f])
            except Exception as one:
                raise SynthError(f"{where}: {what} {f} cannot be read ({_reason(one)}); is it truncated, or not a "
                                 f"{''.join(Path(f).suffixes) or 'valid'} file?") from None
        raise SynthError(f"{where}: images {', '.join(files)} cannot be read together ({_reason(e)})") from None


def written_by_us(path: Path) -> bool:
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(content, dict):
        return False
    # Summaries written before the marker existed carry these keys, which nnU-Net's never do.
    return str(content.get(WRITTEN_BY_KEY, "")).startswith("nnunet_synth") or OLD_SUMMARY_KEYS <= set(content)


def check_output_file(path: Path, overwrite: bool, option: str = "-o") -> None:
    """A JSON output file that may be written: not a folder, ends in .json, writable, and ours or --overwrite."""
    if path.is_dir():
        raise SynthError(f"{option} {path}: is a folder; {option} takes a file name, e.g. {path / 'summary.json'}")
    if path.suffix != ".json":
        raise SynthError(f"{option} {path}: the output is a JSON file; give a name ending in .json")
    if path.exists() and not overwrite and not written_by_us(path):
        raise SynthError(f"{option} {path}: exists and was not written by nnunet-synth (nnU-Net's own "
                         f"summary.json?); pass --overwrite to replace it, or choose another {option}")
    check_writable(path.parent, f"{option} ")


def write_failed(path: Path, error: OSError) -> SynthError:
    return SynthError(f"{path}: cannot be written ({error.strerror or type(error).__name__})")
