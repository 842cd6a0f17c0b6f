"""The study config: a TOML file read with ``tomllib`` and checked before anything runs.

``load_config`` returns a ``Study`` or raises ``StudyConfigError`` with one
line per problem (unknown keys, a missing dataset, an unknown generator or
trainer, repeats < 1, a test set with other channels, a leaky arm). The fields
are documented in docs/study.md; the built-in configs are in ``builtin/``.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_synth.errors import SynthError

BUILTIN_FOLDER = Path(__file__).parent / "builtin"
USES = ("baseline", "expansion", "diffboost")
GENERATE_KEYS = ("mode", "k", "seed", "prompt")
SECTIONS = {
    "study": {"name", "dataset", "configuration", "plans", "folds", "repeats", "first_id", "num_processes"},
    "phantom": {"first_id", "n_train", "n_test", "image_size", "seed", "scanners"},
    "budget": {"epochs", "iterations", "val_iterations", "final_validation", "augmentation_processes", "seed"},
    "evaluation": {"disable_tta", "bootstrap", "seed", "label_map", "examples"},
    "tests": {"name", "dataset", "folder"},
    "generators": {"name", "fit", "generate", "fit_fold", "model", "inspect"},
    "inspect": {"filter", "disable_tta", "copy_threshold"},
    "arms": {"use", "generator", "trainer", "mix", "synthetic_probability", "synthetic_only", "targeted",
             "filtered"},
    "targeted": {"worst", "ranking_folds"},
}


class StudyConfigError(SynthError):
    """Every problem of a config, one line each (``problems``)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Budget:
    """The training schedule of every arm; None: nnU-Net's own trainers and schedule (1000 x 250)."""
    epochs: int | None = None
    iterations: int | None = None
    val_iterations: int | None = None
    # False: nnU-Net's validation after training is skipped where nothing but the study's own cross-eval (which
    # predicts the same validation cases) would read it; inspect and targeted steps still get theirs
    final_validation: bool = True
    # nnUNet_n_proc_DA of the trainings (None: the caller's); 0 augments in the training process itself
    augmentation_processes: int | None = None
    seed: int | None = None   # repeat R trains with seed + R (nnUNetSynth_seed); None: unseeded, as nnU-Net

    @property
    def short(self) -> bool:
        return self.epochs is not None


@dataclass(frozen=True)
class TestSet:
    name: str
    source: str          # a dataset id/name, or a folder
    is_folder: bool


@dataclass(frozen=True)
class Phantom:
    """The built-in phantom as the study's data: its first step writes it (``nnunet-synth phantom``)."""
    first_id: int = 700
    n_train: int = 60
    n_test: int = 30
    image_size: int | None = None
    seed: int = 0
    scanners: str = "A,B,C"

    def plan(self) -> list:
        """The phantom's datasets (phantom.datasets.PhantomDataset); raises SynthError for bad settings."""
        from nnunet_synth.phantom.datasets import plan_datasets

        return plan_datasets(self.first_id, self.n_train, self.n_test, self.seed, self.image_size,
                             self.scanners.split(","))

    def command(self) -> list[str]:
        return ["nnunet-synth", "phantom", "--first-id", str(self.first_id), "--n-train", str(self.n_train),
                "--n-test", str(self.n_test), "--seed", str(self.seed), "--scanners", self.scanners, "--quiet",
                *(["--image-size", str(self.image_size)] if self.image_size is not None else [])]


@dataclass(frozen=True)
class Inspect:
    """``nnunet-synth inspect`` of a generator's synthetic sets, with the fold's repeat-0 baseline."""
    band: object = None   # a quality.consistency.Band (--filter LOW:HIGH); None: figures only, every case kept
    disable_tta: bool = False
    copy_threshold: float = 0.95


@dataclass(frozen=True)
class GeneratorSpec:
    key: str
    name: str
    fit: dict
    generate: dict
    fit_fold: str | None = None   # None: each study fold's own training cases
    model: str | None = None      # a fitted model folder (no fit step)
    inspect: Inspect | None = None


@dataclass(frozen=True)
class Targeted:
    worst: int
    ranking_folds: tuple[int, ...] | None = None  # None: every fold but the arm's


@dataclass(frozen=True)
class Arm:
    name: str
    use: str
    trainer: str                   # without the Short suffix of a budget
    generator: str | None = None
    synthetic_only: bool = False
    targeted: Targeted | None = None
    filtered: bool = True          # False: also the cases the generator's inspect filter dropped (expansion)

    @property
    def forward_passes(self) -> int:
        """Network forward passes per training iteration: output-mix DiffBoost forwards real and twin."""
        return 2 if self.use == "diffboost" and "InputMix" not in self.trainer else 1


@dataclass(frozen=True)
class Study:
    path: str                      # the config file (or "builtin:NAME")
    name: str
    dataset: str
    configuration: str
    plans: str
    folds: tuple[int, ...]
    repeats: int
    first_id: int | None
    num_processes: int
    budget: Budget
    tests: tuple[TestSet, ...]
    generators: dict = field(default_factory=dict)   # key -> GeneratorSpec
    arms: tuple[Arm, ...] = ()
    disable_tta: bool = False
    bootstrap: int = 10000
    examples: int = 3                 # cross-eval's --examples (cases per direction in the example grids)
    eval_seed: int = 0
    label_map: tuple[str, ...] = ()   # cross-eval's --label-map, for every test set
    phantom: Phantom | None = None

    def settings(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def trainer(self, arm: Arm) -> str:
        return arm.trainer + ("Short" if self.budget.short else "")

    @property
    def baseline(self) -> Arm:
        return next(a for a in self.arms if a.use == "baseline")


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_FOLDER.glob("*.toml"))


def builtin_path(name: str) -> Path:
    path = BUILTIN_FOLDER / f"{name}.toml"
    if not path.is_file():
        raise SynthError(f"--builtin {name}: no such built-in study (built-in: {', '.join(builtin_names())})")
    return path


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SynthError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise SynthError(f"{path}: not valid TOML ({e})") from None


def load_config(path: str | os.PathLike, label: str | None = None, check_data: bool = True) -> Study:
    """Read and check a config; every problem is collected first, then all are refused together.

    ``check_data=False`` checks the file alone; ``check_study_data`` then checks it against the datasets
    (a study with ``[phantom]`` writes its data first).
    """
    path = Path(path)
    raw = read_toml(path)
    problems: list[str] = []
    study = _parse(raw, label or str(path), problems)
    if study is not None and check_data:
        _check_data(study, problems)
    if problems:
        raise StudyConfigError([f"{label or path}: {p}" for p in problems])
    return study


def check_study_data(study: Study) -> None:
    """The config against the datasets it names (StudyConfigError with one line per problem)."""
    problems: list[str] = []
    _check_data(study, problems)
    if problems:
        raise StudyConfigError([f"{study.path}: {p}" for p in problems])


# ---------------------------------------------------------------- parsing


def _unknown(table: dict, allowed: set, where: str, problems: list[str]) -> None:
    for key in sorted(set(table) - allowed):
        problems.append(f"unknown key '{key}' in {where} (known: {', '.join(sorted(allowed))})")


def _table(raw: dict, key: str, where: str, problems: list[str]) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        problems.append(f"{where} must be a table")
        return {}
    return value


def _typed(table: dict, key: str, kind, where: str, problems: list[str], default=None, minimum=None):
    if key not in table:
        return default
    value = table[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)) or \
            kind is not int and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        problems.append(f"{where}.{key} = {value!r}: expected {names}")
        return default
    if minimum is not None and value < minimum:
        problems.append(f"{where}.{key} = {value}: must be at least {minimum}")
        return default
    return value


def _parse(raw: dict, label: str, problems: list[str]) -> Study | None:
    _unknown(raw, set(SECTIONS) - {"targeted", "inspect"}, "the config", problems)
    s = _table(raw, "study", "[study]", problems)
    _unknown(s, SECTIONS["study"], "[study]", problems)
    if "dataset" not in s:
        problems.append("[study] needs 'dataset' (the real raw dataset: id, name or folder)")
    folds_value = s.get("folds", [0])
    if folds_value == "all":
        folds = (0, 1, 2, 3, 4)
    elif isinstance(folds_value, list) and folds_value and all(isinstance(f, int) and 0 <= f <= 4 for f in folds_value):
        folds = tuple(sorted(set(folds_value)))
    else:
        problems.append(f"[study].folds = {folds_value!r}: expected a list of folds 0-4 or \"all\"")
        folds = (0,)
    repeats = _typed(s, "repeats", int, "[study]", problems, default=1)
    if repeats < 1:
        problems.append(f"[study].repeats = {repeats}: must be at least 1 (training seeds per arm)")
    b = _table(raw, "budget", "[budget]", problems)
    _unknown(b, SECTIONS["budget"], "[budget]", problems)
    budget = Budget(*(_typed(b, k, int, "[budget]", problems, minimum=1) for k in ("epochs", "iterations",
                                                                                  "val_iterations")),
                    final_validation=_typed(b, "final_validation", bool, "[budget]", problems, default=True),
                    augmentation_processes=_typed(b, "augmentation_processes", int, "[budget]", problems,
                                                  minimum=0),
                    seed=_typed(b, "seed", int, "[budget]", problems, minimum=0))
    if b and budget.epochs is None:
        problems.append("[budget] needs 'epochs' (with iterations and val_iterations: the short schedule of every arm)")
    if budget.epochs is not None:
        budget = dataclasses.replace(budget, iterations=budget.iterations or 250, val_iterations=budget.val_iterations or 50)
    e = _table(raw, "evaluation", "[evaluation]", problems)
    _unknown(e, SECTIONS["evaluation"], "[evaluation]", problems)
    label_map = e.get("label_map", [])
    if not isinstance(label_map, list) or not all(isinstance(m, str) and re.fullmatch(r"-?\d+:-?\d+", m)
                                                  for m in label_map):
        problems.append("[evaluation].label_map must be a list of \"FROM:TO\" strings, e.g. [\"255:1\"]")
        label_map = []
    phantom = _parse_phantom(raw, s, problems) if "phantom" in raw else None
    tests = _parse_tests(raw.get("tests", []), problems)
    generators = _parse_generators(_table(raw, "generators", "[generators]", problems), problems)
    arms = _parse_arms(_table(raw, "arms", "[arms]", problems), generators, folds, problems)
    if "dataset" not in s:
        return None
    return Study(path=label, name=str(s.get("name", "study")), dataset=str(s["dataset"]),
                 configuration=_typed(s, "configuration", str, "[study]", problems, default="3d_fullres"),
                 plans=_typed(s, "plans", str, "[study]", problems, default="nnUNetPlans"), folds=folds,
                 repeats=max(repeats, 1), first_id=_typed(s, "first_id", int, "[study]", problems, minimum=1),
                 num_processes=_typed(s, "num_processes", int, "[study]", problems, default=2, minimum=1),
                 budget=budget, tests=tests, generators=generators, arms=arms,
                 disable_tta=_typed(e, "disable_tta", bool, "[evaluation]", problems, default=False),
                 bootstrap=_typed(e, "bootstrap", int, "[evaluation]", problems, default=10000, minimum=100),
                 examples=_typed(e, "examples", int, "[evaluation]", problems, default=3, minimum=0),
                 eval_seed=_typed(e, "seed", int, "[evaluation]", problems, default=0), label_map=tuple(label_map),
                 phantom=phantom)


def _parse_phantom(raw: dict, s: dict, problems: list[str]) -> Phantom | None:
    p = _table(raw, "phantom", "[phantom]", problems)
    _unknown(p, SECTIONS["phantom"], "[phantom]", problems)
    defaults = Phantom()
    values = {k: _typed(p, k, int, "[phantom]", problems, default=getattr(defaults, k))
              for k in ("first_id", "n_train", "n_test", "image_size", "seed")}
    values["scanners"] = _typed(p, "scanners", str, "[phantom]", problems, default=defaults.scanners)
    phantom = Phantom(**values)
    try:
        phantom.plan()
    except SynthError as e:
        problems.append(f"[phantom]: {e}")
        return None
    if str(s.get("dataset")) not in (str(phantom.first_id), f"Dataset{phantom.first_id:03d}_PhantomA"):
        problems.append(f"[study].dataset = {s.get('dataset')!r}: with [phantom] the real dataset is the phantom's "
                        f"training set, {phantom.first_id}")
    return phantom


def _parse_tests(items, problems: list[str]) -> tuple[TestSet, ...]:
    if not isinstance(items, list) or not all(isinstance(t, dict) for t in items):
        problems.append("tests must be an array of tables ([[tests]] with name and dataset or folder)")
        return ()
    out, names = [], set()
    for i, t in enumerate(items):
        where = f"[[tests]] #{i + 1}"
        _unknown(t, SECTIONS["tests"], where, problems)
        name = t.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("validation"):
            problems.append(f"{where}: needs a 'name' of letters, digits, '_', '.', '-' (not starting with "
                            f"'validation', the in-domain test set's name)")
            continue
        if name in names:
            problems.append(f"{where}: the test set name '{name}' is used twice")
        names.add(name)
        if ("dataset" in t) == ("folder" in t):
            problems.append(f"{where} ({name}): give exactly one of 'dataset' (id or name) and 'folder'")
            continue
        out.append(TestSet(name, str(t.get("dataset", t.get("folder"))), "folder" in t))
    return tuple(out)


def _parse_generators(table: dict, problems: list[str]) -> dict:
    from nnunet_synth.generators import registry

    known = registry.names()
    out = {}
    for key, g in table.items():
        where = f"[generators.{key}]"
        if not isinstance(g, dict):
            problems.append(f"{where} must be a table")
            continue
        _unknown(g, SECTIONS["generators"], where, problems)
        name = g.get("name")
        if name not in known:
            problems.append(f"{where}: unknown generator {name!r} (known: {', '.join(known)})")
            continue
        fit, generate = g.get("fit", {}), g.get("generate", {})
        if not isinstance(fit, dict) or not isinstance(generate, dict):
            problems.append(f"{where}: fit and generate must be tables of options")
            continue
        if "mode" not in generate or "k" not in generate:
            problems.append(f"{where}.generate needs 'mode' (twins, new or inpaint) and 'k'")
        fit_fold = g.get("fit_fold")
        if fit_fold is not None and fit_fold != "all" and not (isinstance(fit_fold, int) and 0 <= fit_fold <= 4):
            problems.append(f"{where}.fit_fold = {fit_fold!r}: expected a fold 0-4 or \"all\"")
        if g.get("model") is not None and (fit or fit_fold is not None):
            problems.append(f"{where}: 'model' (a fitted model folder) takes no fit options or fit_fold")
        _check_generator_options(name, fit, generate, where, problems)
        inspect = _parse_inspect(g["inspect"], where, problems) if "inspect" in g else None
        out[key] = GeneratorSpec(key, name, dict(fit), dict(generate),
                                 None if fit_fold is None else str(fit_fold), g.get("model"), inspect)
    return out


def _parse_inspect(table, where: str, problems: list[str]) -> Inspect | None:
    from nnunet_synth.quality.consistency import parse_band

    where = f"{where}.inspect"
    if not isinstance(table, dict):
        problems.append(f"{where} must be a table ({{ filter = \"0.5\" }})")
        return None
    _unknown(table, SECTIONS["inspect"], where, problems)
    band = None
    if "filter" in table:
        try:
            band = parse_band(str(table["filter"]))
        except SynthError as e:
            problems.append(f"{where}.filter = {table['filter']!r}: {e}")
    threshold = _typed(table, "copy_threshold", (int, float), where, problems, default=0.95)
    return Inspect(band, _typed(table, "disable_tta", bool, where, problems, default=False), float(threshold))


def _check_generator_options(name: str, fit: dict, generate: dict, where: str, problems: list[str]) -> None:
    """Option names against the generator's settings dataclasses (the options `fit`/`generate NAME` take)."""
    from nnunet_synth.generators import registry

    cls = registry.get(name)
    for table, settings, extra in ((fit, cls.fit_settings, ()), (generate, cls.generate_settings, GENERATE_KEYS)):
        fields = {f.name for f in dataclasses.fields(settings)}
        kind = "fit" if table is fit else "generate"
        for key in sorted(set(table) - fields - set(extra)):
            problems.append(f"{where}.{kind}: '{key}' is not an option of `nnunet-synth {kind} {name}` "
                            f"(options: {', '.join(sorted(fields | set(extra)))})")
        for f in dataclasses.fields(settings):
            if f.metadata.get("required") and f.name not in table:
                problems.append(f"{where}.{kind}: `nnunet-synth {kind} {name}` needs '{f.name}'")
    modes = getattr(cls, "supported_modes", None)
    if "mode" in generate and modes and generate["mode"] not in modes:
        problems.append(f"{where}.generate.mode = {generate['mode']!r}: {name} supports {', '.join(modes)}")
    if "k" in generate and (not isinstance(generate["k"], int) or generate["k"] < 1):
        problems.append(f"{where}.generate.k = {generate['k']!r}: must be an integer of at least 1")


DEFAULT_TRAINERS = {"baseline": "nnUNetTrainer", "expansion": "nnUNetTrainerSynthExpand",
                    "diffboost": "nnUNetTrainerDiffBoost"}


def _parse_arms(table: dict, generators: dict, folds, problems: list[str]) -> tuple[Arm, ...]:
    out = []
    for name, a in table.items():
        where = f"[arms.{name}]"
        if not isinstance(a, dict):
            problems.append(f"{where} must be a table")
            continue
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            problems.append(f"{where}: an arm name holds letters, digits and '_' only")
            continue
        _unknown(a, SECTIONS["arms"], where, problems)
        use = a.get("use")
        if use not in USES:
            problems.append(f"{where}.use = {use!r}: one of {', '.join(USES)}")
            continue
        generator = a.get("generator")
        if use == "baseline":
            if (set(a) & SECTIONS["arms"]) - {"use", "trainer"}:  # unknown keys are reported once, above
                problems.append(f"{where}: a baseline arm takes only 'trainer'")
        elif generator not in generators:
            problems.append(f"{where}: unknown generator {generator!r} (the config's generators: "
                            f"{', '.join(generators) or 'none'})")
        trainer = a.get("trainer") or _variant_trainer(use, a, where, problems)
        targeted = None
        if "targeted" in a:
            t = a["targeted"]
            if use != "expansion" or not isinstance(t, dict):
                problems.append(f"{where}.targeted: a table, for expansion arms only")
            else:
                _unknown(t, SECTIONS["targeted"], f"{where}.targeted", problems)
                worst = _typed(t, "worst", int, f"{where}.targeted", problems, default=None, minimum=1)
                ranking = t.get("ranking_folds")
                if worst is None:
                    problems.append(f"{where}.targeted needs 'worst' (the N worst-segmented training cases)")
                elif ranking is not None and not (isinstance(ranking, list) and ranking
                                                   and all(isinstance(f, int) and 0 <= f <= 4 for f in ranking)):
                    problems.append(f"{where}.targeted.ranking_folds = {ranking!r}: expected a list of folds 0-4")
                else:
                    targeted = Targeted(worst, None if ranking is None else tuple(sorted(set(ranking))))
        if "synthetic_only" in a and use != "expansion":
            problems.append(f"{where}.synthetic_only: for expansion arms only")
        filtered = _typed(a, "filtered", bool, where, problems, default=True)
        if not filtered:
            spec = generators.get(generator)
            if use != "expansion" or targeted is not None:
                problems.append(f"{where}.filtered = false: for expansion arms of an inspected generator only "
                                f"(DiffBoost trains on the kept twins: the real dataset holds one twin set)")
            elif spec is not None and (spec.inspect is None or spec.inspect.band is None):
                problems.append(f"{where}.filtered = false: generator '{generator}' has no inspect filter "
                                f"([generators.{generator}] inspect = {{ filter = \"LOW\" }}), so nothing is "
                                f"filtered out")
        out.append(Arm(name, use, trainer, generator if use != "baseline" else None,
                       bool(a.get("synthetic_only", False)), targeted, filtered))
    for key, spec in generators.items():
        if spec.inspect is not None and not any(a.generator == key and a.targeted is None for a in out):
            problems.append(f"[generators.{key}].inspect: no arm uses its plain synthetic set (targeted sets are "
                            f"not inspected)")
    if sum(a.use == "baseline" for a in out) != 1:
        problems.append("[arms] needs exactly one arm with use = \"baseline\" (the arm the others are compared with)")
    return tuple(out)


def _variant_trainer(use: str, a: dict, where: str, problems: list[str]) -> str:
    """The trainer variant of an arm's settings (the variants are classes in trainers/)."""
    trainer = DEFAULT_TRAINERS.get(use, "nnUNetTrainer")
    if "mix" in a:
        if use != "diffboost" or a["mix"] not in ("output", "input"):
            problems.append(f"{where}.mix = {a['mix']!r}: \"output\" or \"input\", for diffboost arms only")
        elif a["mix"] == "input":
            trainer = "nnUNetTrainerDiffBoostInputMix"
    if "synthetic_probability" in a:
        p = a["synthetic_probability"]
        if use != "expansion" or p not in (0.25, 0.5, 0.75):
            problems.append(f"{where}.synthetic_probability = {p!r}: 0.25, 0.5 or 0.75 (the "
                            f"nnUNetTrainerSynthExpand_synNN variants), for expansion arms only")
        else:
            trainer = f"nnUNetTrainerSynthExpand_syn{int(p * 100)}"
    return trainer


# ---------------------------------------------------------------- checks against the data


def _check_data(study: Study, problems: list[str]) -> None:
    for arm in study.arms:
        if study.trainer(arm) not in known_trainers():
            problems.append(f"[arms.{arm.name}]: trainer {study.trainer(arm)} does not exist"
                            + (" (a [budget] uses the *Short trainers)" if study.budget.short else ""))
    diffboost_generators = {a.generator for a in study.arms if a.use == "diffboost"}
    if len(diffboost_generators) > 1 or (diffboost_generators and len(study.folds) > 1):
        problems.append("diffboost arms: one generator and one fold per study (the real dataset's preprocessed "
                        "folder holds one twin set)")
    try:
        real = open_real(study.dataset)
    except SynthError as e:
        problems.append(f"[study].dataset: {e}")
        return
    for test in study.tests:
        if not test.is_folder and _same_folder(test.source, real.folder) and not (
                (real.folder / "imagesTs").is_dir() and (real.folder / "labelsTs").is_dir()):
            problems.append(f"[[tests]] {test.name}: {real.name} has no imagesTs/labelsTs, so cross-eval would test "
                            f"on its training cases (each fold's validation is the in-domain test set already)")
            continue
        channels = _test_channels(test, problems)
        if channels is not None and channels != real.num_channels:
            problems.append(f"[[tests]] {test.name}: {channels} image channel(s), but {real.name} has "
                            f"{real.num_channels}; a model cannot predict it")
    try:
        folds = study_folds(real)
    except SynthError as e:
        problems.append(f"{real.name}: {e}")
        return
    _check_leaks(study, real, folds, problems)


def _same_folder(source: str, folder: Path) -> bool:
    from nnunet_synth.raw_dataset import find_raw_dataset

    try:
        return Path(find_raw_dataset(source)).resolve() == folder.resolve()
    except SynthError:
        return False


def study_folds(real) -> list[dict]:
    from nnunet_synth.splits import real_folds

    return real_folds(real.name, real.case_ids(), os.environ.get("nnUNet_preprocessed"))[0]


def open_real(dataset: str):
    """The real RawDataset, opened once per process for the same folder contents.

    Listing a dataset's cases starts a process pool in nnU-Net; the config check and
    the step chain both need the list.
    """
    from nnunet_synth.raw_dataset import find_raw_dataset

    folder = Path(find_raw_dataset(dataset)).resolve()
    stamps = tuple((folder / sub).stat().st_mtime_ns if (folder / sub).exists() else 0
                   for sub in ("dataset.json", "imagesTr", "labelsTr"))
    return _open_real(str(folder), stamps)


@functools.lru_cache(maxsize=8)
def _open_real(folder: str, stamps: tuple):
    from nnunet_synth.raw_dataset import RawDataset

    real = RawDataset(folder)
    real.case_ids()  # listed now, kept with the object
    return real


def _test_channels(test: TestSet, problems: list[str]) -> int | None:
    from nnunet_synth.raw_dataset import RawDataset

    if not test.is_folder:
        try:
            return RawDataset.open(test.source).num_channels
        except SynthError as e:
            problems.append(f"[[tests]] {test.name}: {e}")
            return None
    folder = Path(test.source)
    if (folder / "dataset.json").is_file():
        return RawDataset(folder).num_channels
    images = folder / "images"
    if not images.is_dir() or not (folder / "labels").is_dir():
        problems.append(f"[[tests]] {test.name}: {folder} has no images/ and labels/ (nor dataset.json)")
        return None
    channels = {m.group(1) for p in images.iterdir() if (m := re.search(r"_(\d{4})\.", p.name))}
    return len(channels)


def generator_training_cases(spec: GeneratorSpec, folds: list[dict], fold: int) -> list[str]:
    """The real cases the generator used for ``fold``'s arms is trained on."""
    from nnunet_synth.splits import fold_training_cases

    if spec.model is not None:
        from nnunet_synth.atomic import read_json
        from nnunet_synth.manifest import TRAINING_CASES_FILE

        recorded = read_json(Path(spec.model) / TRAINING_CASES_FILE,
                             "point 'model' at a folder written by `nnunet-synth fit`")
        return list(recorded.get("cases", []))
    return fold_training_cases(folds, spec.fit_fold if spec.fit_fold is not None else fold)


def _check_leaks(study: Study, real, folds: list[dict], problems: list[str]) -> None:
    from nnunet_synth.splits import leaked_folds

    for arm in study.arms:
        if arm.generator is None or arm.generator not in study.generators:
            continue
        spec = study.generators[arm.generator]
        for fold in study.folds:
            try:
                trained_on = generator_training_cases(spec, folds, fold)
            except SynthError as e:
                problems.append(f"[generators.{spec.key}]: {e}")
                return
            leaked = leaked_folds(folds, trained_on).get(fold)
            if leaked:
                problems.append(f"[arms.{arm.name}] fold {fold}: generator '{spec.key}' was trained on "
                                f"{len(leaked)} of the fold's validation case(s) ({', '.join(leaked[:3])}); "
                                f"fit it on the fold's training cases (drop fit_fold / model)")
            if arm.targeted and fold in ranking_folds(arm.targeted, fold):
                problems.append(f"[arms.{arm.name}].targeted.ranking_folds holds fold {fold}: its validation "
                                f"cases cannot be targeted without leaking into fold {fold}'s training")


def ranking_folds(targeted: Targeted, fold: int) -> tuple[int, ...]:
    return targeted.ranking_folds if targeted.ranking_folds is not None else tuple(f for f in range(5) if f != fold)


@functools.lru_cache(maxsize=1)
def known_trainers() -> frozenset[str]:
    """Trainer class names in this package's trainers/ and nnU-Net's trainer folder (read, not imported)."""
    import nnunetv2

    from nnunet_synth.environment import trainer_folder

    roots = [Path(trainer_folder()), Path(nnunetv2.__file__).parent / "training" / "nnUNetTrainer"]
    names = set()
    for root in roots:
        for path in root.rglob("*.py"):
            try:
                tree = ast.parse(path.read_text())
            except (SyntaxError, UnicodeDecodeError):
                continue
            names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    return frozenset(names)
