"""Write a tiny random Stable Diffusion 1.x folder (diffusers layout) for tests.

A testing tool, not an ``nnunet-synth`` command: run it as
``python -m nnunet_synth.testing.tiny_sd OUT_DIR`` (or
``python -m nnunet_synth.commands.tiny_sd OUT_DIR``). The weights are random
and seeded; the folder loads with ``from_pretrained(..., local_files_only=True)``.

Example:
  python -m nnunet_synth.testing.tiny_sd /tmp/tiny-sd-inpaint --inpainting --seed 0
"""
from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the model into")
    parser.add_argument("--inpainting", action="store_true",
                        help="a 9-channel inpainting UNet (StableDiffusionInpaintPipeline) instead of a 4-channel one")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")


def run(args) -> int:
    from nnunet_synth.testing.tiny_sd import write_tiny_sd

    print(write_tiny_sd(args.out_dir, inpainting=args.inpainting, seed=args.seed))
    return 0


if __name__ == "__main__":
    from nnunet_synth.commands.runner import standalone

    sys.exit(standalone("tiny-sd", __doc__, add_arguments, run))
