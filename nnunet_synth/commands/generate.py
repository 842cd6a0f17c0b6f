"""Write a synthetic raw dataset: a fitted generator's pairs for real or varied masks.

For each source case and k = 0 .. K-1, the generator makes one pair, fully
determined by the sample seed (a function of --seed, the source case and k):

  --mode twins   case {source}_syn{k:03d}: a new image for the source's real mask;
                 its label file is the real mask.
  --mode new     case {source}_new{k:03d}: the real mask first deformed (affine +
                 elastic, kept within the image, seeded by the sample seed), then
                 an image generated for the new mask.
  --mode inpaint case {source}_inp{k:03d}: a new lesion painted into the source
                 image (generators that support it); its label file is the
                 source mask plus the new lesion.

Images are mapped onto the source case's own intensity distribution (quantile
mapping; inpainted voxels are scaled back onto its intensity range) and written in its data type, file format and geometry. The output
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

from nnunet_synth.commands.generator_options import add_dataset_argument, add_generator_subcommands, settings_from_args
from nnunet_synth.commands.options import add_device_argument, add_output_argument
from nnunet_synth.generators.base import MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_generator_subcommands(parser, "generate_settings", _add_common_arguments)


def _add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", required=True, metavar="MODEL_DIR",
                   help="model folder written by `nnunet-synth fit` (holds training_cases.json)")
    add_dataset_argument(p)
    add_output_argument(p, "id", "SYNTH_ID", "the synthetic dataset written to nnUNet_raw as DatasetSYNTHID_<name>",
                        "--output", required=True)
    p.add_argument("--name", default=None,
                   help="dataset name after 'DatasetSYNTHID_' (default: <RealName>Synth<Mode>, e.g. ThyroidSynthTwins)")
    p.add_argument("--mode", required=True, choices=MODES,
                   help="twins: new images for the real masks; new: varied masks and images for them; "
                        "inpaint: new lesions painted into the real images")
    p.add_argument("-k", type=int, required=True, metavar="K", help="synthetic cases per source case (>= 1)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--cases", nargs="+", metavar="CASE",
                       help="source cases to generate for (default: every training case of the real dataset)")
    which.add_argument("--worst", type=int, metavar="N",
                       help="generate for the N cases the --baseline model segmented worst (mean foreground Dice)")
    p.add_argument("--baseline", metavar="RESULTS_FOLDER",
                   help="with --worst: an nnU-Net training output folder with fold_*/validation/summary.json")
    p.add_argument("--seed", type=int, default=0, help="base seed; sample seeds derive from it, the case and k (default 0)")
    p.add_argument("--prompt", default=None,
                   help="text prompt for generators that take one (recorded per case in synthesis.json)")
    add_device_argument(p, "auto (cuda if available, else cpu), cpu, cuda or cuda:N; under accelerate each process "
                           "uses its own GPU (default auto)", default="auto")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an existing output dataset first (otherwise only a rerun of the same command resumes it)")


def run(args) -> int:
    from nnunet_synth.generators.generate import GenerateJob, generate_dataset

    job = GenerateJob(generator=args.generator, model_dir=args.model, dataset=args.dataset, output_id=args.output,
                      mode=args.mode, k=args.k, name=args.name,
                      cases=tuple(args.cases) if args.cases else None, worst=args.worst, baseline=args.baseline,
                      seed=args.seed, prompt=args.prompt, device=args.device, overwrite=args.overwrite)
    generate_dataset(job, settings_from_args(args.settings_class, args))
    return 0


if __name__ == "__main__":
    # `accelerate launch -m nnunet_synth.commands.generate ...` runs this in every process.
    from nnunet_synth.commands.runner import standalone

    sys.exit(standalone("generate", __doc__, add_arguments, run))
