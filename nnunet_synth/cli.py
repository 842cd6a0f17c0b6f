"""The ``nnunet-synth`` command line.

Each sub-command lives in its own module, which defines ``add_arguments(parser)``
and ``run(args)``. Modules are imported only when their command runs (or when
``--help`` lists them), so ``nnunet-synth doctor`` works even where torch is
broken.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from nnunet_synth import __version__
from nnunet_synth.errors import SynthError

# name -> (module, one-line help). Add new commands here.
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("nnunet_synth.doctor", "check the environment and print the line that fixes each problem"),
    "trainer-path": ("nnunet_synth.doctor_trainer_path", "print the folder that nnUNet_extTrainer must point to"),
    "phantom": ("nnunet_synth.phantom.cli", "write the built-in ultrasound phantom datasets (training device A, test devices A, B, C)"),
    "demo": ("nnunet_synth.demo", "run the whole chain on built-in phantom data and print the results table"),
    "expand": ("nnunet_synth.expand", "build an expanded raw dataset: real plus synthetic cases, leakage-safe folds"),
    "fit": ("nnunet_synth.generators.fit_cmd", "train a generator on the real training cases of a fold"),
    "generate": ("nnunet_synth.generators.generate_cmd", "write a synthetic raw dataset (twins or new pairs) with its manifest"),
    "twins": ("nnunet_synth.diffboost.command", "preprocess synthetic twins with the real dataset's plans for DiffBoost training"),
    "convert": ("nnunet_synth.convert.command", "convert a public dataset (DDTI, TN3K, BUSI, ISIC, ...) into an nnU-Net raw dataset"),
    "evaluate": ("nnunet_synth.evaluation.evaluate", "score predictions against references: nnU-Net's summary.json plus HD95, ASSD, precision, recall"),
    "cross-eval": ("nnunet_synth.evaluation.cross_eval", "predict test sets with several models, compare them per case, write CSV, JSON, statistics and a report"),

}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet-synth",
        description="Diffusion-synthesized image-mask pairs for nnU-Net v2. "
                    "Run 'nnunet-synth COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args._module.run(args)
    except SynthError as e:
        print(f"nnunet-synth {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nnunet-synth {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
