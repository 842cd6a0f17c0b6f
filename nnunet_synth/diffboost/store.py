"""Where preprocessed twins live and how the trainer reads them.

Twins of a configuration are stored in ``<data_identifier>/diffboost_twins/``
inside the real dataset's preprocessed folder: a subfolder, because nnU-Net
takes every ``*.b2nd`` directly in ``<data_identifier>/`` for a training case.
``twins.json`` there records what the twins were made from (the twin manifest);
beside it lies a copy of the synthetic dataset's ``synthesis.json``, so the
trainer reads leakage information without nnUNet_raw.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import blosc2
import numpy as np

from nnunet_synth.atomic import read_json, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import MANIFEST_FILE, TWINS_FILE, TWINS_FOLDER, Manifest, file_hash

FORMAT_VERSION = 1


def twin_folder(preprocessed_configuration_folder: str | os.PathLike) -> Path:
    return Path(preprocessed_configuration_folder) / TWINS_FOLDER


def refuse_cascaded(configuration_manager, configuration: str, where: str) -> None:
    """DiffBoost's one cascade guard (twin preprocessing and trainer both call it).

    A cascaded configuration stacks the previous stage's segmentation onto the
    image channels, which the loader and the twin pipeline would mix up with
    the twin's channels.
    """
    previous = configuration_manager.previous_stage_name
    if previous is not None:
        raise SynthError(f"{where}: configuration '{configuration}' is cascaded "
                         f"(previous stage '{previous}'); DiffBoost supports 2d and 3d_fullres")


def plans_fingerprint(plans_manager, configuration_manager) -> str:
    """A hash of everything in the plans that decides how a case is preprocessed.

    Other configurations of the same plans file do not enter it, so adding a
    configuration does not invalidate twins made for this one.
    """
    relevant = {
        "plans_name": plans_manager.plans_name,
        "dataset_name": plans_manager.dataset_name,
        "transpose_forward": list(plans_manager.transpose_forward),
        "foreground_intensity_properties_per_channel": plans_manager.foreground_intensity_properties_per_channel,
        "configuration": configuration_manager.configuration,
    }
    text = json.dumps(relevant, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class TwinManifest:
    real_dataset: str
    synthetic_dataset: str
    synthesis_manifest_hash: str
    plans_identifier: str
    configuration: str
    data_identifier: str
    plans_fingerprint: str
    twins: dict[str, list[str]] = field(default_factory=dict)   # real case -> twin case ids
    real_only: list[str] = field(default_factory=list)          # real cases allowed to train without twins

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / TWINS_FILE
        write_json_atomic(path, {"format_version": FORMAT_VERSION, **asdict(self)})
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "TwinManifest":
        path = Path(folder) / TWINS_FILE
        obj = read_json(path, "preprocess the twins for this configuration (nnunet-synth twins -d REAL_ID "
                              "-s SYNTH_ID -c CONFIGURATION)")
        if not isinstance(obj, dict) or obj.pop("format_version", None) != FORMAT_VERSION:
            raise SynthError(f"{path}: not a twin manifest of format {FORMAT_VERSION}; rerun nnunet-synth twins")
        try:
            return cls(**obj)
        except TypeError as e:
            raise SynthError(f"{path}: malformed ({e}); rerun nnunet-synth twins") from None

    def load_synthesis(self, folder: str | os.PathLike, rerun: str) -> Manifest:
        """The copy of synthesis.json beside ``twins.json``, refused if it is not the one the twins were made from.

        If the synthetic dataset is still in nnUNet_raw, its synthesis.json must
        be unchanged too (kept cases or training cases of the generator may
        have changed since); without nnUNet_raw the copy alone decides.
        """
        copy = Path(folder) / MANIFEST_FILE
        if not copy.is_file():
            raise SynthError(f"{copy}: missing; {rerun}")
        if file_hash(copy) != self.synthesis_manifest_hash:
            raise SynthError(f"{copy}: differs from the synthesis.json the twins were made from "
                             f"(its hash is in {TWINS_FILE}); {rerun}")
        raw = os.environ.get("nnUNet_raw")
        source = Path(raw) / self.synthetic_dataset / MANIFEST_FILE if raw else None
        if source is not None and source.is_file() and file_hash(source) != self.synthesis_manifest_hash:
            raise SynthError(f"{source}: changed since the twins were preprocessed; {rerun}")
        return Manifest.load(folder)


class TwinStore:
    """Random access to the twins of the real training cases.

    ``twins_per_case`` limits each case to its first K twins (sorted by id);
    ``choose`` then picks one of them uniformly at random.
    """

    def __init__(self, folder: str | os.PathLike, twins: dict[str, list[str]], twins_per_case: int | None = None):
        if twins_per_case is not None and twins_per_case < 1:
            raise SynthError(f"twins_per_case must be None or at least 1, got {twins_per_case}")
        self.folder = Path(folder)
        self.twins = {case: sorted(ids)[:twins_per_case] for case, ids in twins.items() if ids}
        self._open: dict[str, object] = {}

    def __getstate__(self):
        # Open blosc2 handles do not pickle; worker processes open their own.
        return {**self.__dict__, "_open": {}}

    def path(self, twin_id: str) -> Path:
        return self.folder / f"{twin_id}.b2nd"

    def open(self, twin_id: str):
        handle = self._open.get(twin_id)
        if handle is None:
            path = self.path(twin_id)
            if not path.is_file():
                raise SynthError(f"{path}: missing twin; rerun nnunet-synth twins for this configuration")
            kwargs = {} if os.name == "nt" else {"mmap_mode": "r"}
            handle = blosc2.open(urlpath=str(path), mode="r", dparams={"nthreads": 1}, **kwargs)
            self._open[twin_id] = handle
        return handle

    def choose(self, case: str) -> tuple[str | None, object | None]:
        """(twin id, twin array) for a real case, or (None, None) for a real-only case."""
        ids = self.twins.get(case)
        if not ids:
            return None, None
        twin_id = ids[np.random.randint(len(ids))]
        return twin_id, self.open(twin_id)

    def check_against(self, real_folder: str | os.PathLike, cases) -> None:
        """Every twin exists and has the shape of its real preprocessed case."""
        for case in cases:
            real_shape = blosc2.open(urlpath=str(Path(real_folder) / f"{case}.b2nd"), mode="r").shape
            for twin_id in self.twins.get(case, []):
                shape = self.open(twin_id).shape
                if tuple(shape) != tuple(real_shape):
                    raise SynthError(f"{self.path(twin_id)}: shape {tuple(shape)} differs from the real "
                                     f"preprocessed case '{case}' {tuple(real_shape)}; rerun nnunet-synth twins")
