"""Write a synthetic raw dataset with a fitted generator (``nnunet-synth generate``).

For each source case and k = 0 .. K-1 the framework builds one
``GenerationRequest`` (the source case in [-1, 1], the target mask, the sample
seed, the prompt, the generator's settings), checks the generator's response,
maps the image onto the source's intensities and writes the pair with the
source's geometry and data types. The sample seed depends only on (base seed,
source case, k), so sharded (accelerate) and resumed runs write the same files
as one uninterrupted run.

Python API::

    from nnunet_synth.generators.generate import GenerateJob, generate_dataset
    from nnunet_synth.generators.patch_ddpm.settings import PatchDDPMGenerateOptions

    generate_dataset(GenerateJob("patch-ddpm", model_dir="models/f0", dataset="901", output_id=902,
                                 mode="twins", k=2), PatchDDPMGenerateOptions(steps=20))
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnunet_synth import __version__
from nnunet_synth.atomic import write_json_atomic
from nnunet_synth.errors import GeneratorError, SynthError
from nnunet_synth.generators import mask_variation, registry, synthetic_dataset
from nnunet_synth.generators.base import KIND_OF_MODE, GenerationRequest, GenerationResponse
from nnunet_synth.generators.intensity import denormalise, to_source_intensities
from nnunet_synth.generators.source_cases import SourceCase, check_case_ids, read_source_case
from nnunet_synth.generators.targeting import worst_cases
from nnunet_synth.generators.training_record import read_training_record
from nnunet_synth.labels import check_label_values
from nnunet_synth.manifest import (GeneratorRecord, SyntheticCase, hash_model_folder, sample_seed, synthetic_case_id,
                                   training_cases_hash)
from nnunet_synth.raw_dataset import RawDataset

MODE_WORDS = {"twins": "Twins", "new": "New", "inpaint": "Inpaint"}


@dataclass(frozen=True)
class GenerateJob:
    """What to generate and where; the generator's own settings come separately."""

    generator: str
    model_dir: str | os.PathLike
    dataset: str                      # the real raw dataset: id, name or folder
    output_id: int                    # id of the synthetic dataset in nnUNet_raw
    mode: str                         # twins, new or inpaint
    k: int                            # synthetic cases per source case
    name: str | None = None           # default <RealName>Synth<Mode>
    cases: tuple[str, ...] | None = None
    worst: int | None = None          # with baseline: the N cases a baseline segmented worst
    baseline: str | None = None
    seed: int = 0
    prompt: str | None = None
    device: str = "auto"              # auto, cpu, cuda, cuda:N
    overwrite: bool = False


def resolve_device(requested: str) -> str:
    """``auto`` -> cuda when available and accelerate was not told to use the CPU; others are checked."""
    import torch

    if requested == "auto":
        if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"):
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    m = re.fullmatch(r"cpu|cuda(?::(\d+))?", requested)
    if m is None:
        raise SynthError(f"--device {requested!r}: expected auto, cpu, cuda or cuda:N (N a GPU index)")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SynthError(f"--device {requested}: torch sees no CUDA GPU on this machine "
                             f"(torch.cuda.is_available() is False); use --device cpu or auto")
        index, count = int(m.group(1) or 0), torch.cuda.device_count()
        if index >= count:
            raise SynthError(f"--device {requested}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    return requested


def check_job(job: GenerateJob, generator_class) -> None:
    if job.k < 1:
        raise SynthError(f"-k must be at least 1, got {job.k}")
    if (job.worst is None) != (job.baseline is None):
        raise SynthError("--worst N and --baseline RESULTS_FOLDER go together")
    if job.worst is not None and job.cases is not None:
        raise SynthError("--cases and --worst choose the source cases in two ways; give one")
    if job.mode not in generator_class.supported_modes:
        raise SynthError(f"generator {job.generator} supports --mode "
                         f"{' or '.join(generator_class.supported_modes)}, not {job.mode}")
    if job.prompt is not None and not generator_class.uses_prompt:
        raise SynthError(f"generator {job.generator} takes no prompt; leave out --prompt")


def select_sources(real: RawDataset, job: GenerateJob) -> tuple[list[str], dict]:
    """The source cases and how they were chosen (recorded in the manifest)."""
    # Sorted: the order of a list decides nothing, so it must not make a rerun look different.
    if job.cases:
        return sorted(check_case_ids(real, list(job.cases), "--cases")), {"by": "list"}
    if job.worst is not None:
        cases, dice = worst_cases(job.baseline, job.worst, real.file_ending, real.case_ids())
        return sorted(cases), {"by": "worst", "worst": job.worst, "baseline": str(Path(job.baseline).resolve()),
                               "baseline_dice": dice}
    return real.case_ids(), {"by": "all"}


def settings_json(settings) -> dict:
    """A generator's settings as recorded in the manifest (tuples become lists)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(settings).items()}


def generate_dataset(job: GenerateJob, settings) -> Path:
    """Write (or resume) the synthetic dataset; returns its folder. Runs in every accelerate process."""
    from accelerate import PartialState

    generator_class = registry.get(job.generator)
    if not isinstance(settings, generator_class.generate_settings):
        raise TypeError(f"{job.generator} takes {generator_class.generate_settings.__name__} settings, "
                        f"got {type(settings).__name__}")
    check_job(job, generator_class)
    real = RawDataset.open(job.dataset)
    real.check_files()
    model_dir = Path(job.model_dir).resolve()
    record = read_training_record(model_dir, job.generator)
    if record["dataset"] != real.name:
        raise SynthError(f"{model_dir} was trained on {record['dataset']}, not on {real.name}; "
                         f"its training cases could not be checked against {real.name}'s folds")
    sources, selection = select_sources(real, job)
    name = job.name or f"{real.name.split('_', 1)[1]}Synth{MODE_WORDS[job.mode]}"
    folder = synthetic_dataset.output_folder(job.output_id, name, real)

    device = resolve_device(job.device)
    state = PartialState(cpu=device == "cpu")
    if state.num_processes > 1 and device != "cpu":
        device = str(state.device)  # each process its own GPU
    generator = generator_class.load(model_dir, device)
    settings = generator.check_settings(settings)
    model_labels = generator.model_labels()
    _check_sources(real, sources, model_labels)

    generator_record = GeneratorRecord(
        name=job.generator, version=str(generator_class.version or __version__),
        model_folder=str(model_dir), model_hash=hash_model_folder(model_dir),
        trained_on=list(record["cases"]), parameters=_parameters(job, sources, selection, record, settings),
        training_cases_hash=training_cases_hash(record["cases"]))
    identity = synthetic_dataset.manifest_identity(real.name, generator_record)
    status = "new" if job.overwrite else synthetic_dataset.folder_state(folder, identity)
    if status == "conflict":
        raise SynthError(f"{folder} exists and was written with other parameters (or not by this command); "
                         f"use --overwrite to replace it, or another -o id")
    if status == "complete":
        if state.is_main_process:
            print(f"{folder} is already complete ({len(sources) * job.k} cases); nothing to do")
        return folder

    kind = KIND_OF_MODE[job.mode]
    items = [(source, k) for source in sources for k in range(job.k)]
    with state.split_between_processes(items) as mine:
        mine = list(mine)
    pending = [(s, k) for s, k in mine if job.overwrite or not synthetic_dataset.is_done(
        folder, synthetic_case_id(s, kind, k), real.num_channels, real.file_ending)]
    # The first sample is made before anything is written, so a generator that refuses its settings or the
    # masks (or fails) leaves no folder behind that would block the corrected command.
    first = _sample(generator, real, pending[0], job, settings, model_labels, folder.name) if pending else None

    state.wait_for_everyone()  # every process has read the folder's state before it changes
    created = not folder.exists() or job.overwrite
    if state.is_main_process:
        if job.overwrite and folder.exists():
            shutil.rmtree(folder)
        synthetic_dataset.prepare(folder, identity, status)
    state.wait_for_everyone()

    desc = f"generate {folder.name}" + (f" [process {state.process_index}]" if state.num_processes > 1 else "")
    try:
        with tqdm(pending, desc=desc, unit="case", position=state.process_index) as bar:
            for source_id, k in bar:
                if first is not None:
                    (source, image, mask, case), first = first, None
                else:
                    source, image, mask, case = _sample(generator, real, (source_id, k), job, settings,
                                                        model_labels, folder.name, source)
                case_id = synthetic_case_id(source_id, kind, k)
                synthetic_dataset.write_case_files(folder, case_id, image, mask, source, real, state.process_index)
                write_json_atomic(synthetic_dataset.record_path(folder, case_id), asdict(case), sort_keys=True)
    except BaseException:
        if created and state.num_processes == 1 and synthetic_dataset.holds_no_case(folder):
            shutil.rmtree(folder)  # nothing to resume: leave nothing that would block the corrected command
        raise
    summary = generator.summary()
    if summary:
        print(f"{desc}: {summary}", flush=True)
    state.wait_for_everyone()
    if state.is_main_process:
        synthetic_dataset.finish(folder, real, [synthetic_case_id(s, kind, k) for s, k in items], generator_record)
        generator.finish_dataset(folder)
        print(f"wrote {len(items)} synthetic cases to {folder}")
    state.wait_for_everyone()
    return folder


def _sample(generator, real: RawDataset, item: tuple[str, int], job: GenerateJob, settings, model_labels,
            generator_id: str, source: SourceCase | None = None):
    """(source case, image, mask, record) of one item; ``source`` is reused when it is the item's."""
    source_id, k = item
    if source is None or source.case_id != source_id:
        source = read_source_case(real, source_id)
    image, mask, case = generate_sample(generator, source, job.mode, sample_seed(job.seed, source_id, k), job.prompt,
                                        settings, model_labels, generator_id)
    check_written_range(image, real.source_dtype(source_id), type(generator).__name__, source_id)
    return source, image, mask, case


def check_written_range(image: np.ndarray, dtype, who: str, source_id: str) -> None:
    """A generated image must be finite and fit the source's data type before it is rounded and cast."""
    dtype = np.dtype(dtype)
    low, high = float(np.min(image)), float(np.max(image))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise GeneratorError(f"generator {who} gave an image with NaN or infinite values for source case "
                             f"'{source_id}'; nothing was written for it (is the model diverged? refit it)")
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else np.finfo(dtype)
    margin = 0.5 if np.issubdtype(dtype, np.integer) else 0.0
    if low < float(info.min) - margin or high > float(info.max) + margin:
        raise GeneratorError(f"generator {who} gave an image with values {low:g} to {high:g} for source case "
                             f"'{source_id}', outside the range of its data type {dtype} "
                             f"({info.min:g} to {info.max:g}); nothing was written for it")


def generate_sample(generator, source: SourceCase, mode: str, seed: int, prompt: str | None, settings,
                    model_labels, generator_id: str) -> tuple[np.ndarray, np.ndarray, SyntheticCase]:
    """One pair in the source's intensities: (image (C, *spatial), final mask, its manifest record)."""
    extras = {"mask_source": source.case_id}
    target = source.seg
    if mode == "new" and not generator.draws_masks:
        target, extras["mask_deformation"] = mask_variation.vary_mask(source.seg, source.spacing, seed)
    request = GenerationRequest(source=source.normalised, target_mask=target, mode=mode, seed=seed,
                                prompt=prompt, settings=settings)
    response = generator.generate(request)
    image = check_response(generator, request, response, model_labels)
    if mode == "inpaint":
        raw = source.image.astype(np.float64)
        painted = np.broadcast_to(response.changed, raw.shape)
        image = np.where(painted, denormalise(image, source.image), raw)
    else:
        image = to_source_intensities(image, source.image)
    extras.update(response.extras)
    record = SyntheticCase(generator=generator_id, source_case=source.case_id, kind=KIND_OF_MODE[mode], seed=seed,
                           prompt=response.prompt if response.prompt is not None else prompt,
                           kept=bool(response.kept), extra=extras)
    return image, np.asarray(response.mask), record


def check_response(generator, request: GenerationRequest, response: GenerationResponse, model_labels) -> np.ndarray:
    """The response's image, after checking that it keeps the interface's promises."""
    who, case = type(generator).__name__, request.source.case_id
    if not isinstance(response, GenerationResponse):
        raise GeneratorError(f"generator {who} returned {type(response).__name__}, not a GenerationResponse")
    image, mask = np.asarray(response.image), np.asarray(response.mask)
    expected = (request.source.image.shape[0],) + request.target_mask.shape
    if image.shape != expected:
        raise GeneratorError(f"generator {who} returned an image of shape {image.shape} for case '{case}', "
                           f"expected {expected}")
    if not np.all(np.isfinite(image)):
        raise GeneratorError(f"generator {who} returned NaN or infinite values for case '{case}'")
    if image.min() < -1.001 or image.max() > 1.001:
        raise GeneratorError(f"generator {who} returned values outside [-1, 1] for case '{case}'")
    if mask.shape != request.target_mask.shape:
        raise GeneratorError(f"generator {who} returned a mask of shape {mask.shape} for case '{case}', "
                           f"expected {request.target_mask.shape}")
    check_label_values(mask, model_labels, f"generator {who}, case '{case}': the returned mask",
                       allowed_from="the model")
    if request.mode == "inpaint":
        if response.changed is None or np.shape(response.changed) != mask.shape:
            raise GeneratorError(f"generator {who} must say which voxels it painted (changed, shape {mask.shape}) "
                               f"when inpainting case '{case}'")
        changed = np.asarray(response.changed, dtype=bool)
        if not np.array_equal(mask[~changed], request.source.seg[~changed]):
            raise GeneratorError(f"generator {who} changed the source's labels outside the voxels it painted "
                               f"while inpainting case '{case}'")
        # Inside, a source label may become another (a region label the new lesion), never background.
        if (changed & (request.source.seg != 0) & (mask == 0)).any():
            raise GeneratorError(f"generator {who} erased labels of the source while inpainting case '{case}'")
    elif not (request.mode == "new" and generator.draws_masks) and not np.array_equal(mask, request.target_mask):
        raise GeneratorError(f"generator {who} returned a mask other than the target mask for case '{case}' "
                           f"(mode {request.mode})")
    return image


def _check_sources(real: RawDataset, sources: list[str], model_labels) -> None:
    """Every source case is read and checked before anything is written: finite intensities, label geometry,
    labels declared by dataset.json (``RawDataset.read_case``) and known to the model."""
    for case in sources:
        _, seg, _ = real.read_case(case)
        check_label_values(seg, model_labels, f"{real.label_file(case)} (case '{case}')",
                           allowed_from="the model", hint="the generator was trained on other labels")


def _parameters(job: GenerateJob, sources, selection, record, settings) -> dict:
    parameters = {
        "mode": job.mode, "k": job.k, "seed": job.seed, "prompt": job.prompt, "source_cases": list(sources),
        "selection": selection, "model_fold": record.get("fold"), "generator_options": settings_json(settings),
        "intensity_mapping": ("inpaint: painted voxels scaled back linearly onto the source's intensity range, the "
                              "others the source's own" if job.mode == "inpaint" else
                              "quantile mapping onto the source case's intensities "
                              "(skimage.exposure.match_histograms), rounded to the source dtype"),
    }
    if job.mode == "new" and not registry.get(job.generator).draws_masks:
        parameters["mask_variation"] = {
            "max_rotation_deg": mask_variation.MAX_ROTATION_DEG, "max_scale_change": mask_variation.MAX_SCALE_CHANGE,
            "max_shift_fraction": mask_variation.MAX_SHIFT_FRACTION,
            "elastic_grid_fraction": mask_variation.ELASTIC_GRID_FRACTION,
            "elastic_alpha_fraction": mask_variation.ELASTIC_ALPHA_FRACTION}
    return parameters
