"""Write a synthetic raw dataset: a fitted generator's images for real or varied masks.

For each source case and k = 0 .. K-1, the generator makes one image, fully
determined by the sample seed (a function of --seed, the source case and k):

  --mode twins   case {source}_syn{k:03d}: a new image for the source's real mask;
                 its label file is the real mask.
  --mode new     case {source}_new{k:03d}: the real mask first deformed (affine +
                 elastic, kept within the image, seeded by the sample seed), then
                 an image generated for the new mask.

Images are mapped onto the source case's own intensity distribution (quantile
mapping) and written in its data type, file format and geometry. The output
is nnUNet_raw/DatasetSYNTHID_<RealName>Synth<Mode> (or --name) with dataset.json
(same channels, labels and file ending as the real dataset) and synthesis.json
(provenance: model, its training cases, all parameters, per-case seed and mask
origin).

Resume: rerunning the same command skips finished cases; the result is byte
for byte the same as an uninterrupted run. A different command on an existing
output is refused unless --overwrite is given.

Sharding: run the same command under accelerate to share the cases between
processes, e.g. on 2 GPUs (on CPU-only machines the same line runs 2 CPU
processes):
  accelerate launch --multi_gpu --num_processes 2 -m nnunet_synth.commands.generate \\
      patch-ddpm -m models/thyroid_f0 -d 901 -o 902 --mode twins -k 4

Examples:
  nnunet-synth generate patch-ddpm -m models/thyroid_f0 -d 901 -o 902 --mode twins -k 4
  nnunet-synth generate patch-ddpm -m models/thyroid_f0 -d 901 -o 903 --mode new -k 2 \\
      --worst 10 --baseline $nnUNet_results/Dataset901_Thyroid/nnUNetTrainer__nnUNetPlans__2d
  nnunet-synth generate patch-ddpm --help     (the generator's own options)
"""
from __future__ import annotations

import argparse
import sys

from nnunet_synth.errors import SynthError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nnunet_synth.generators.options import add_generator_subcommands

    add_generator_subcommands(parser, "add_generate_arguments", _add_common_arguments)


def _add_common_arguments(p: argparse.ArgumentParser) -> None:
    from nnunet_synth.generators.options import add_dataset_argument

    p.add_argument("-m", "--model", required=True, metavar="MODEL_DIR",
                   help="model folder written by `nnunet-synth fit` (holds training_cases.json)")
    add_dataset_argument(p)
    p.add_argument("-o", "--output", required=True, type=int, metavar="SYNTH_ID",
                   help="dataset id of the synthetic dataset written to nnUNet_raw")
    p.add_argument("--name", default=None,
                   help="dataset name after 'DatasetSYNTHID_' (default: <RealName>Synth<Mode>, e.g. ThyroidSynthTwins)")
    p.add_argument("--mode", required=True, choices=("twins", "new"),
                   help="twins: new images for the real masks; new: varied masks and images for them")
    p.add_argument("-k", type=int, required=True, metavar="K", help="synthetic cases per source case (>= 1)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--cases", nargs="+", metavar="CASE",
                       help="source cases to generate for (default: every training case of the real dataset)")
    which.add_argument("--worst", type=int, metavar="N",
                       help="generate for the N cases the --baseline model segmented worst (mean foreground Dice)")
    p.add_argument("--baseline", metavar="RESULTS_FOLDER",
                   help="with --worst: an nnU-Net training output folder with fold_*/validation/summary.json")
    p.add_argument("--seed", type=int, default=0, help="base seed; sample seeds derive from it, the case and k (default 0)")
    p.add_argument("--device", default="auto",
                   help="auto (cuda if available, else cpu), cpu, cuda or cuda:N; under accelerate each process "
                        "uses its own GPU")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an existing output dataset first (otherwise only a rerun of the same command resumes it)")


def _check_arguments(args) -> None:
    if args.k < 1:
        raise SynthError(f"-k must be at least 1, got {args.k}")
    if (args.worst is None) != (args.baseline is None):
        raise SynthError("--worst N and --baseline RESULTS_FOLDER go together")
    if args.mode not in args.generator_class.supported_modes:
        raise SynthError(f"generator {args.generator} supports --mode "
                         f"{' or '.join(args.generator_class.supported_modes)}, not {args.mode}")


def select_sources(real, args) -> tuple[list[str], dict]:
    """The source cases and how they were chosen (recorded in the manifest)."""
    from pathlib import Path

    from nnunet_synth.generators.baseline import worst_cases
    from nnunet_synth.generators.framework import check_case_ids

    # Sorted: the order of a list decides nothing, so it must not make a rerun look different.
    if args.cases:
        return sorted(check_case_ids(real, args.cases, "--cases")), {"by": "list"}
    if args.worst is not None:
        cases, dice = worst_cases(args.baseline, args.worst, real.file_ending, real.case_ids())
        return sorted(cases), {"by": "worst", "worst": args.worst, "baseline": str(Path(args.baseline).resolve()),
                       "baseline_dice": dice}
    return real.case_ids(), {"by": "all"}


def run(args) -> int:
    from pathlib import Path

    from nnunet_synth.generators import framework, synthetic_dataset
    from nnunet_synth.generators.options import generator_options
    from nnunet_synth.raw_dataset import RawDataset

    _check_arguments(args)
    real = RawDataset.open(args.dataset)
    model_dir = Path(args.model).resolve()
    record = framework.read_training_record(model_dir, args.generator)
    if record["dataset"] != real.name:
        raise SynthError(f"{model_dir} was trained on {record['dataset']}, not on {real.name}; "
                         f"its training cases could not be checked against {real.name}'s folds")
    sources, selection = select_sources(real, args)
    mode_word = "Twins" if args.mode == "twins" else "New"
    name = args.name or f"{real.name.split('_', 1)[1]}Synth{mode_word}"
    folder = synthetic_dataset.output_folder(args.output, name, real)

    from accelerate import PartialState

    device = framework.resolve_device(args.device)
    state = PartialState(cpu=device == "cpu")
    if state.num_processes > 1 and device != "cpu":
        device = str(state.device)  # each process its own GPU
    generator = args.generator_class.load(model_dir, device)
    model_labels = generator.model_labels()
    _check_source_masks(real, sources, model_labels)

    from nnunet_synth.manifest import GeneratorRecord, hash_model_folder

    parameters = _parameters(args, sources, selection, record, generator_options(args))
    generator_record = GeneratorRecord(
        name=args.generator, version=str(getattr(args.generator_class, "version", "") or _package_version()),
        model_folder=str(model_dir), model_hash=hash_model_folder(model_dir),
        trained_on=list(record["cases"]), parameters=parameters)
    identity = synthetic_dataset.manifest_identity(real.name, generator_record)
    status = "new" if args.overwrite else synthetic_dataset.folder_state(folder, identity)
    if status == "conflict":
        raise SynthError(f"{folder} exists and was written with other parameters (or not by this command); "
                         f"use --overwrite to replace it, or another -o id")
    if status == "complete":
        if state.is_main_process:
            print(f"{folder} is already complete ({len(sources) * args.k} cases); nothing to do")
        return 0
    state.wait_for_everyone()  # every process has read the folder's state before it changes
    if state.is_main_process:
        if args.overwrite and folder.exists():
            import shutil

            shutil.rmtree(folder)
        synthetic_dataset.prepare(folder, identity, status)
    state.wait_for_everyone()

    kind = "twin" if args.mode == "twins" else "new"
    items = [(source, k) for source in sources for k in range(args.k)]
    with state.split_between_processes(items) as mine:
        _generate_items(generator, real, folder, mine, kind, args, state)
    state.wait_for_everyone()
    if state.is_main_process:
        from nnunet_synth.manifest import synthetic_case_id

        synthetic_dataset.finish(folder, real, [synthetic_case_id(s, kind, k) for s, k in items], generator_record)
        print(f"wrote {len(items)} synthetic cases to {folder}")
    state.wait_for_everyone()
    return 0


def _generate_items(generator, real, folder, items, kind, args, state) -> None:
    from dataclasses import asdict

    from tqdm import tqdm

    from nnunet_synth.generators import framework, synthetic_dataset
    from nnunet_synth.generators.mask_variation import vary_mask
    from nnunet_synth.manifest import SyntheticCase, sample_seed, synthetic_case_id

    source = None
    desc = f"generate {folder.name}" + (f" [process {state.process_index}]" if state.num_processes > 1 else "")
    for source_id, k in tqdm(items, desc=desc, unit="case", position=state.process_index):
        case_id = synthetic_case_id(source_id, kind, k)
        if synthetic_dataset.is_done(folder, case_id, real.num_channels, real.file_ending):
            continue
        if source is None or source.case_id != source_id:
            source = framework.read_source_case(real, source_id)
        seed = sample_seed(args.seed, source_id, k)
        extra = {"mask_source": source_id}
        mask = source.seg
        if kind == "new":
            mask, extra["mask_deformation"] = vary_mask(source.seg, source.spacing, seed)
        image = framework.generate_image(generator, mask, source, seed, args)
        synthetic_dataset.write_case_files(folder, case_id, image, mask, source, real, state.process_index)
        record = SyntheticCase(generator=folder.name, source_case=source_id, kind=kind, seed=seed, extra=extra)
        framework.atomic_json(synthetic_dataset.record_path(folder, case_id), asdict(record))


def _check_source_masks(real, sources, model_labels) -> None:
    """Every source mask's labels must be known to the model; checked before anything is written."""
    import numpy as np

    from nnunet_synth.generators.framework import check_mask_labels

    reader = real.reader_writer()
    for case in sources:
        seg, _ = reader.read_seg(real.label_file(case))
        check_mask_labels(case, np.rint(seg).astype(np.int64), model_labels, real.label_file(case))


def _parameters(args, sources, selection, record, options) -> dict:
    from nnunet_synth.generators import mask_variation

    parameters = {
        "mode": args.mode, "k": args.k, "seed": args.seed, "source_cases": list(sources), "selection": selection,
        "model_fold": record.get("fold"), "generator_options": options,
        "intensity_mapping": "quantile mapping onto the source case's intensities "
                             "(skimage.exposure.match_histograms), rounded to the source dtype",
    }
    if args.mode == "new":
        parameters["mask_variation"] = {
            "max_rotation_deg": mask_variation.MAX_ROTATION_DEG, "max_scale_change": mask_variation.MAX_SCALE_CHANGE,
            "max_shift_fraction": mask_variation.MAX_SHIFT_FRACTION,
            "elastic_grid_fraction": mask_variation.ELASTIC_GRID_FRACTION,
            "elastic_alpha_fraction": mask_variation.ELASTIC_ALPHA_FRACTION}
    return parameters


def _package_version() -> str:
    from nnunet_synth import __version__

    return __version__


if __name__ == "__main__":
    # `accelerate launch -m nnunet_synth.commands.generate ...` runs this in every process.
    from nnunet_synth.commands.runner import standalone

    sys.exit(standalone("generate", __doc__, add_arguments, run))
