"""Write a tiny random DINOv2 folder (transformers layout) for tests.

A testing tool, not an ``nnunet-synth`` command: run it as
``python -m nnunet_synth.testing.tiny_dinov2 OUT_DIR`` (or
``python -m nnunet_synth.commands.tiny_dinov2 OUT_DIR``). The weights are random
and seeded; the folder loads with ``Dinov2Model.from_pretrained(..., local_files_only=True)``.

Example:
  python -m nnunet_synth.testing.tiny_dinov2 /tmp/tiny-dinov2 --seed 0
"""
from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the model into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")


def run(args) -> int:
    from nnunet_synth.testing.tiny_dinov2 import write_tiny_dinov2

    print(write_tiny_dinov2(args.out_dir, seed=args.seed))
    return 0


if __name__ == "__main__":
    from nnunet_synth.commands.runner import standalone

    sys.exit(standalone("tiny-dinov2", __doc__, add_arguments, run))
