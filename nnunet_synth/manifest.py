"""The provenance manifest ``synthesis.json`` of a synthetic raw dataset.

One module writes, reads and validates it; splits and trainers read leakage
information from it and nowhere else (DESIGN.md). Format (version 1)::

    {
      "format_version": 1,
      "real_dataset": "Dataset901_Thyroid",          # where every source case lives
      "generators": {
        "<generator id>": {                         # the synthetic dataset's name by default
          "name": "patch-ddpm", "version": "0.1.0",
          "model_folder": "/abs/path", "model_hash": "sha256:...",
          "trained_on": ["case_001", ...],          # real cases the model saw in training
          "parameters": {...}                       # every generation parameter
        }
      },
      "cases": {
        "case_001_syn000": {"generator": "<generator id>", "source_case": "case_001",
                            "kind": "twin", "seed": 123, "prompt": null,   # kind: twin | new | inpaint
                            "kept": true, "extra": {}}
      }
    }

A generator writes one entry in ``generators``; ``nnunet-synth expand`` merges
the manifests of the datasets it combines into one with several entries.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nnunet_synth.atomic import read_json, write_json_atomic
from nnunet_synth.errors import SynthError

MANIFEST_FILE = "synthesis.json"
# A generator's model folder: the dataset, fold and real cases it was trained on (copied into synthesis.json).
TRAINING_CASES_FILE = "training_cases.json"
EXPANSION_FILE = "expansion.json"
# DiffBoost twins: a subfolder of the real preprocessed configuration folder, with its own manifest
# and a copy of the synthetic dataset's MANIFEST_FILE (so training does not need nnUNet_raw).
TWINS_FOLDER = "diffboost_twins"
TWINS_FILE = "twins.json"
FORMAT_VERSION = 1
KINDS = ("twin", "new", "inpaint")
_KIND_TAG = {"twin": "syn", "new": "new", "inpaint": "inp"}
_TAG_KIND = {tag: kind for kind, tag in _KIND_TAG.items()}
_CASE_ID_PATTERN = re.compile(r"^(?P<source>.+)_(?P<tag>syn|new|inp)(?P<k>\d{3,})$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def synthetic_case_id(source_case: str, kind: str, k: int) -> str:
    """``{source}_syn{k:03d}`` for twins, ``{source}_new{k:03d}`` for new pairs, ``{source}_inp{k:03d}`` for inpainted lesions."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return f"{source_case}_{_KIND_TAG[kind]}{k:03d}"


def parse_synthetic_case_id(case_id: str) -> tuple[str, str, int] | None:
    """(source case, kind, k) of a synthetic case id, or None for an id that is not one."""
    m = _CASE_ID_PATTERN.match(case_id)
    if m is None:
        return None
    return m["source"], _TAG_KIND[m["tag"]], int(m["k"])


def sample_seed(base_seed: int, source_case: str, k: int) -> int:
    """The seed of one sample: a function of (base seed, source case, k) only.

    Sharded and resumed runs therefore draw the same noise for the same sample.
    The value fits in 32 bits, so numpy's legacy RandomState accepts it too.
    """
    digest = hashlib.sha256(f"{int(base_seed)}\x00{source_case}\x00{int(k)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def file_hash(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


# Files that define a model: weights and the configs (JSON) and tokenizer files beside them.
MODEL_FILE_SUFFIXES = WEIGHT_SUFFIXES + (".json", ".txt", ".model")
# Resume state, not the model: checkpoints may be deleted without changing what the folder generates.
_NOT_THE_MODEL = ("checkpoint", "checkpoints")


def _defines_the_model(relative: Path) -> bool:
    if any(part in _NOT_THE_MODEL or part.startswith(("checkpoint-", ".")) for part in relative.parts):
        return False
    return relative.name != TRAINING_CASES_FILE and relative.name.endswith(MODEL_FILE_SUFFIXES)


def hash_model_folder(folder: str | os.PathLike) -> str:
    """A hash over what defines a model folder: its weights and configs (names and contents, sorted).

    Checkpoints (``checkpoint/``, ``checkpoints/``, ``checkpoint-N/``), hidden
    and temporary files and ``training_cases.json`` (tied in by
    ``training_cases_hash``) are left out, so deleting the resume state does
    not make the same model look like another. Works for any generator's folder.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _defines_the_model(p.relative_to(folder)))
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in files):
        raise SynthError(f"{folder}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) to hash outside its checkpoints")
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(folder).as_posix().encode() + b"\x00")
        h.update(file_hash(p).encode())
    return "sha256:" + h.hexdigest()


def training_cases_hash(cases) -> str:
    """The hash that ties a manifest's ``trained_on`` to the model folder's training_cases.json.

    It covers the sorted case ids, so it can be recomputed from either file:
    a ``trained_on`` edited by hand, or a model folder whose
    training_cases.json lists other cases, no longer matches.
    """
    text = json.dumps(sorted(str(c) for c in cases))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class GeneratorRecord:
    name: str
    version: str
    model_folder: str
    model_hash: str
    trained_on: list[str]
    parameters: dict = field(default_factory=dict)
    # training_cases_hash(trained_on), as of the model folder's training_cases.json
    training_cases_hash: str = ""


@dataclass
class SyntheticCase:
    generator: str
    source_case: str
    kind: str
    seed: int
    prompt: str | None = None
    kept: bool = True
    extra: dict = field(default_factory=dict)


@dataclass
class Manifest:
    real_dataset: str
    generators: dict[str, GeneratorRecord] = field(default_factory=dict)
    cases: dict[str, SyntheticCase] = field(default_factory=dict)

    # -- reading and writing -------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "real_dataset": self.real_dataset,
            "generators": {k: asdict(v) for k, v in sorted(self.generators.items())},
            "cases": {k: asdict(v) for k, v in sorted(self.cases.items())},
        }

    def save(self, dataset_folder: str | os.PathLike) -> Path:
        self.validate(Path(dataset_folder) / MANIFEST_FILE)
        path = Path(dataset_folder) / MANIFEST_FILE
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def from_json(cls, obj, where: str) -> "Manifest":
        if not isinstance(obj, dict):
            raise SynthError(f"{where}: expected a JSON object")
        version = obj.get("format_version")
        if version != FORMAT_VERSION:
            raise SynthError(f"{where}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")
        for key in ("real_dataset", "generators", "cases"):
            if key not in obj:
                raise SynthError(f"{where}: missing key '{key}'")
        try:
            generators = {k: GeneratorRecord(**v) for k, v in obj["generators"].items()}
            cases = {k: SyntheticCase(**v) for k, v in obj["cases"].items()}
        except (TypeError, AttributeError) as e:
            raise SynthError(f"{where}: malformed entry ({e})") from None
        manifest = cls(obj["real_dataset"], generators, cases)
        manifest.validate(where)
        manifest.check_model_folders(where)
        return manifest

    @classmethod
    def load(cls, dataset_folder: str | os.PathLike) -> "Manifest":
        path = Path(dataset_folder) / MANIFEST_FILE
        obj = read_json(path, "a synthetic dataset needs the manifest its generator writes (nnunet-synth generate), "
                              "so that splits can keep its cases out of the wrong folds")
        return cls.from_json(obj, str(path))

    # -- checks ----------------------------------------------------------------
    def validate(self, where: str | os.PathLike = MANIFEST_FILE) -> None:
        if not isinstance(self.real_dataset, str) or not self.real_dataset:
            raise SynthError(f"{where}: 'real_dataset' must name the real dataset")
        for gid, g in self.generators.items():
            if not isinstance(g.trained_on, list) or not all(isinstance(c, str) for c in g.trained_on):
                raise SynthError(f"{where}: generator '{gid}': 'trained_on' must be a list of case ids")
            if g.training_cases_hash != training_cases_hash(g.trained_on):
                raise SynthError(f"{where}: generator '{gid}': 'trained_on' does not match its "
                                 f"training_cases_hash{'' if g.training_cases_hash else ' (missing)'}; the leakage "
                                 f"checks cannot trust it: regenerate the dataset with nnunet-synth generate")
        for case_id, c in self.cases.items():
            if c.generator not in self.generators:
                raise SynthError(f"{where}: case '{case_id}' names unknown generator '{c.generator}'")
            if c.kind not in KINDS:
                raise SynthError(f"{where}: case '{case_id}' has kind {c.kind!r}, expected one of {KINDS}")
            parsed = parse_synthetic_case_id(case_id)
            if parsed is None or parsed[0] != c.source_case or parsed[1] != c.kind:
                raise SynthError(f"{where}: case id '{case_id}' does not match its source case "
                                 f"'{c.source_case}' and kind '{c.kind}' (expected "
                                 f"'{c.source_case}_{_KIND_TAG.get(c.kind, '?')}NNN')")
            if not isinstance(c.seed, int) or isinstance(c.seed, bool):
                raise SynthError(f"{where}: case '{case_id}' has a non-integer seed {c.seed!r}")

    def check_model_folders(self, where: str | os.PathLike = MANIFEST_FILE) -> None:
        """Where a generator's model folder is on this machine, its training_cases.json must list ``trained_on``.

        (A folder that moved or was deleted cannot be checked; the hash still
        ties ``trained_on`` to the record it was copied from.)
        """
        for gid, g in self.generators.items():
            record_file = Path(g.model_folder) / TRAINING_CASES_FILE if g.model_folder else None
            if record_file is None or not record_file.is_file():
                continue
            record = read_json(record_file)
            cases = record.get("cases") if isinstance(record, dict) else None
            dataset = record.get("dataset") if isinstance(record, dict) else None
            if dataset != self.real_dataset:
                raise SynthError(f"{where}: generator '{gid}': its model folder was trained on {dataset} "
                                 f"({record_file}), not on {self.real_dataset}; regenerate the dataset")
            if not isinstance(cases, list) or training_cases_hash(cases) != g.training_cases_hash:
                raise SynthError(f"{where}: generator '{gid}': 'trained_on' differs from the cases in {record_file}; "
                                 f"the model folder was retrained or replaced since this dataset was generated: "
                                 f"regenerate it")

    def check_sources(self, real_case_ids, where: str | os.PathLike = MANIFEST_FILE) -> None:
        """Every source case must be a case of the real dataset."""
        real = set(real_case_ids)
        unknown = sorted({c.source_case for c in self.cases.values()} - real)
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise SynthError(f"{where}: {len(unknown)} source case(s) are not cases of {self.real_dataset}: {shown}")

    # -- views -------------------------------------------------------------------
    def kept_cases(self, kind: str | None = None) -> dict[str, SyntheticCase]:
        return {k: c for k, c in self.cases.items() if c.kept and (kind is None or c.kind == kind)}

    def sources(self) -> dict[str, str]:
        """synthetic case id -> source case id."""
        return {k: c.source_case for k, c in self.cases.items()}

    def trained_on(self) -> set[str]:
        """Every real case any generator of this manifest was trained on."""
        return {case for g in self.generators.values() for case in g.trained_on}

    def twins_by_source(self) -> dict[str, list[str]]:
        """real case -> its kept twins, sorted."""
        out: dict[str, list[str]] = {}
        for case_id, c in sorted(self.kept_cases("twin").items()):
            out.setdefault(c.source_case, []).append(case_id)
        return out


def manifest_hash(dataset_folder: str | os.PathLike) -> str:
    """The hash of a dataset's synthesis.json (recorded by trainers that use it)."""
    path = Path(dataset_folder) / MANIFEST_FILE
    if not path.is_file():
        raise SynthError(f"{path}: missing")
    return file_hash(path)


def merge_manifests(real_dataset: str, manifests: dict[str, Manifest]) -> Manifest:
    """One manifest for several synthetic datasets; generator ids are prefixed with the dataset name."""
    merged = Manifest(real_dataset)
    for dataset_name, m in manifests.items():
        if m.real_dataset != real_dataset:
            raise SynthError(f"{dataset_name}/{MANIFEST_FILE}: derived from {m.real_dataset}, not {real_dataset}")
        renamed = {gid: (gid if gid.startswith(dataset_name) else f"{dataset_name}:{gid}") for gid in m.generators}
        for gid, g in m.generators.items():
            merged.generators[renamed[gid]] = g
        for case_id, c in m.cases.items():
            if case_id in merged.cases:
                raise SynthError(f"{dataset_name}/{MANIFEST_FILE}: case id '{case_id}' also appears in another "
                                 f"synthetic dataset; case ids must be unique")
            merged.cases[case_id] = SyntheticCase(**{**asdict(c), "generator": renamed[c.generator]})
    return merged
