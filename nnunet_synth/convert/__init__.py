"""Shared pieces of the public dataset converters in ``dataset_conversion/``.

- ``problems``: per-file problems, reported together at the end;
- ``images``: reading 2D sources, mask binarisation with anti-alias detection,
  lossless PNG/NIfTI writing;
- ``splits``: patient-grouped folds (``splits_final.json``);
- ``staging``: convert into a hidden folder, verify, rename;
- ``registry``: NAME -> script module (imported on demand) and the converter contract;
- ``run``: ``run_converter``, the whole conversion of one source folder.

The command line (``nnunet-synth convert`` and each script's ``__main__``) is
``nnunet_synth.commands.convert``.
"""
from nnunet_synth.convert.problems import CaseProblem, ConversionFailed, Problem, ProblemLog
from nnunet_synth.convert.staging import Case, StagedDataset

__all__ = ["Case", "CaseProblem", "ConversionFailed", "Problem", "ProblemLog", "StagedDataset"]
