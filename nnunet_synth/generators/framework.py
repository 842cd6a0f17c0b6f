"""What ``fit`` and ``generate`` share: cases in generator space, the model folder's
record of its training cases, and the per-sample generation step.

nnU-Net's readers return 2D images as 3D arrays with a leading axis of length 1
and a dummy spacing of 999 (or 999 times the in-plane spacing). Generators see true 2D arrays (C, H, W) with the
in-plane spacing; the leading axis is put back before writing, so written files
have exactly the source's geometry.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_synth.atomic import read_json
from nnunet_synth.errors import SynthError

TRAINING_CASES_FILE = "training_cases.json"
_DUMMY_2D_SPACING = 999


@dataclass
class SourceCase:
    case_id: str
    image: np.ndarray            # float32 (C, *spatial), the raw intensities
    seg: np.ndarray              # int32 (*spatial)
    spacing: tuple[float, ...]   # per spatial axis of ``image``
    properties: dict             # the reader's, for writing with the same geometry
    is_2d: bool

    def restore_layout(self, array: np.ndarray) -> np.ndarray:
        """Put back the length-1 axis nnU-Net's 2D readers and writers use (channel axis first)."""
        return array[:, None] if self.is_2d else array


def read_source_case(real, case_id: str) -> SourceCase:
    images, seg, properties = real.read_case(case_id)
    spacing = tuple(float(s) for s in properties["spacing"])
    # NaturalImage2DIO sets the dummy spacing to 999, SimpleITKIO to 999 times the
    # largest in-plane spacing (2D NIfTI); either way it dwarfs the real spacings.
    is_2d = images.shape[1] == 1 and spacing[0] >= _DUMMY_2D_SPACING * max(spacing[1:]) * (1 - 1e-6)
    if is_2d:
        images, seg, spacing = images[:, 0], seg[:, 0], spacing[1:]
    return SourceCase(case_id, images.astype(np.float32, copy=False), np.rint(seg[0]).astype(np.int32),
                      spacing, properties, is_2d)


def check_case_ids(real, requested: list[str], option: str) -> list[str]:
    known = set(real.case_ids())
    unknown = [c for c in requested if c not in known]
    if unknown:
        raise SynthError(f"{option}: case(s) {', '.join(unknown[:5])} are not in {real.folder}")
    if len(set(requested)) != len(requested):
        raise SynthError(f"{option}: a case is listed twice")
    return list(requested)


# -- the model folder's training cases (the manifest reads them) -------------------------
def training_record(generator: str, real, fold, split_source: str | None, cases: list[str]) -> dict:
    return {"generator": generator, "dataset": real.name, "fold": fold, "split": split_source, "cases": list(cases)}


def read_training_record(model_dir: Path, generator: str) -> dict:
    path = model_dir / TRAINING_CASES_FILE
    how = f"run `nnunet-synth fit {generator} -d DATASET --fold F -o {model_dir}`"
    if not model_dir.is_dir():
        raise SynthError(f"model folder {model_dir} does not exist; {how}")
    record = read_json(path, f"{model_dir} is not a complete model folder; {how}")
    if not isinstance(record, dict) or not isinstance(record.get("cases"), list) or "dataset" not in record:
        raise SynthError(f"{path}: expected an object with 'dataset' and 'cases'; {how}")
    if record.get("generator") != generator:
        raise SynthError(f"{model_dir} holds a '{record.get('generator')}' model, not '{generator}'")
    return record


# -- one sample ----------------------------------------------------------------------
def check_mask_labels(case_id: str, seg: np.ndarray, model_labels, where: str) -> None:
    extra = sorted(set(np.unique(seg).tolist()) - set(int(v) for v in model_labels))
    if extra:
        raise SynthError(f"{where}: mask of case '{case_id}' has label value(s) {extra} that the model was not "
                         f"trained with (model labels: {sorted(int(v) for v in model_labels)})")


def generate_image(generator, mask: np.ndarray, source: SourceCase, seed: int, args) -> np.ndarray:
    """The generator's image for ``mask`` mapped onto the source's intensities, checked."""
    from nnunet_synth.generators.intensity import to_source_intensities

    image = np.asarray(generator.generate(mask, source.spacing, seed, args))
    expected = (source.image.shape[0],) + mask.shape
    if image.shape != expected:
        raise RuntimeError(f"generator {type(generator).__name__} returned shape {image.shape} for case "
                           f"'{source.case_id}', expected {expected}")
    if not np.all(np.isfinite(image)) or image.min() < -1.001 or image.max() > 1.001:
        raise RuntimeError(f"generator {type(generator).__name__} returned values outside [-1, 1] "
                           f"for case '{source.case_id}'")
    return to_source_intensities(image, source.image)


def atomic_json(path: Path, obj) -> None:
    from nnunet_synth.atomic import write_json_atomic

    write_json_atomic(path, obj, sort_keys=True)


def same_json(a, b) -> bool:
    """Equality after a JSON round trip (tuples become lists, keys become strings)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def resolve_device(requested: str) -> str:
    """``auto`` -> cuda when available and accelerate was not told to use the CPU."""
    if requested != "auto":
        return requested
    import torch

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
