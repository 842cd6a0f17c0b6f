"""The command layer: ``nnunet-synth COMMAND``, one module per command.

argparse lives here and nowhere else in the package. A command module has a
docstring (its ``--help`` description), ``add_arguments(parser)`` and
``run(args) -> int``; ``run`` turns the options into plain values or a
settings dataclass and calls one library function. ``COMMANDS`` names the
modules without importing them, so ``nnunet-synth --help`` lists every command
and a command imports only its own module.
"""
from __future__ import annotations

# name -> (module, one-line help). Add new commands here.
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("nnunet_synth.commands.doctor", "check the environment and print the line that fixes each problem"),
    "trainer-path": ("nnunet_synth.commands.trainer_path", "print the folder that nnUNet_extTrainer must point to"),
    "phantom": ("nnunet_synth.commands.phantom",
                "write the built-in ultrasound phantom datasets (training scanner A, test scanners A, B, C)"),
    "demo": ("nnunet_synth.commands.demo", "run the whole chain on built-in phantom data and print the results table"),
    "convert": ("nnunet_synth.commands.convert",
                "convert a public dataset (DDTI, TN3K, BUSI, ISIC, ...) into an nnU-Net raw dataset"),
    "fit": ("nnunet_synth.commands.fit", "train a generator on the real training cases of a fold"),
    "generate": ("nnunet_synth.commands.generate",
                 "write a synthetic raw dataset (twins, new pairs or inpainted lesions) with its manifest"),
    "twins": ("nnunet_synth.commands.twins",
              "preprocess synthetic twins with the real dataset's plans for DiffBoost training"),
    "expand": ("nnunet_synth.commands.expand",
               "build an expanded raw dataset: real plus synthetic cases, leakage-safe folds"),
    "inspect": ("nnunet_synth.commands.inspect",
                "check a synthetic dataset: segmentation consistency (keep band), memorization, fidelity, one report"),
    "evaluate": ("nnunet_synth.commands.evaluate",
                 "score predictions against references: nnU-Net's summary.json plus HD95, ASSD, precision, recall"),
    "cross-eval": ("nnunet_synth.commands.cross_eval",
                   "predict test sets with several models, compare them per case, write CSV, JSON, statistics and a report"),
    "study": ("nnunet_synth.commands.study",
              "run a whole study from one config: generators, arms, trainings, cross-eval, report (--dry-run lists it)"),
}
