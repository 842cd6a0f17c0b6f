"""Preprocess the synthetic twins of a real dataset for DiffBoost training.

The twins (kind "twin", kept by the quality filter) listed in the synthetic
dataset's synthesis.json are preprocessed with the REAL dataset's plans and
each real case's own crop box, and stored in
nnUNet_preprocessed/<real>/<data identifier>/diffboost_twins/ with a
twins.json manifest and a copy of synthesis.json (training then needs no
nnUNet_raw). Run it after nnUNetv2_plan_and_preprocess for the real dataset,
once per configuration you train.

Example:
  nnUNetv2_plan_and_preprocess -d 901 -c 2d
  nnunet-synth twins -d 901 -s 902 -c 2d -np 4
  nnUNetv2_train 901 2d 0 -tr nnUNetTrainerDiffBoost
"""
from __future__ import annotations

from nnunet_synth.commands.options import refuse_device


def add_arguments(parser) -> None:
    parser.add_argument("-d", "--dataset", dest="real", metavar="REAL", required=True,
                        help="real dataset (id, name or folder)")
    parser.add_argument("-s", "--synthetic", dest="synthetic", metavar="SYNTH", required=True,
                        help="synthetic dataset with the twins (id, name or folder)")
    parser.add_argument("-c", "--configuration", dest="configuration", metavar="CONFIG", required=True,
                        help="configuration to preprocess for (e.g. 2d, 3d_fullres)")
    parser.add_argument("-p", "--plans", dest="plans", default="nnUNetPlans",
                        help="plans identifier (default: nnUNetPlans)")
    parser.add_argument("--allow-real-only", action="store_true",
                        help="train real cases that have no twins unmixed instead of refusing")
    parser.add_argument("-np", "--num-processes", dest="num_processes", type=int, default=1,
                        help="worker processes (default: 1)")
    refuse_device(parser, "twins has no device option: preprocessing runs on the CPU (-np sets the processes)")


def run(args) -> int:
    from nnunet_synth.diffboost.twins import preprocess_twins
    from nnunet_synth.errors import SynthError

    if args.num_processes < 1:
        raise SynthError(f"-np {args.num_processes}: must be at least 1")
    folder = preprocess_twins(args.real, args.synthetic, args.configuration, args.plans,
                              args.allow_real_only, args.num_processes)
    print(f"twins written to {folder}")
    return 0
