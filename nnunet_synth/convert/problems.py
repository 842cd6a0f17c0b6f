"""Problems found in source data, collected per file and reported together.

Public datasets often contain a few bad files. Stopping at the first one makes
the user rerun the conversion once per bad file, so every converter collects
all problems first and reports them in one list at the end.
"""
from __future__ import annotations

from dataclasses import dataclass

from nnunet_synth.errors import SynthError


class CaseProblem(Exception):
    """Raised inside a per-case function: this source file cannot be converted as it is."""

    def __init__(self, path, message: str):
        super().__init__(f"{path}: {message}")
        self.path = str(path)
        self.message = message

    def __reduce__(self):
        # Keep both fields when the exception travels back from a worker process.
        return (CaseProblem, (self.path, self.message))


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    case_id: str | None = None

    def __str__(self) -> str:
        where = f" (case {self.case_id})" if self.case_id else ""
        return f"{self.path}{where}: {self.message}"


class ProblemLog:
    """Problems and warnings of one conversion run."""

    def __init__(self):
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def add(self, path, message: str, case_id: str | None = None) -> None:
        self.problems.append(Problem(str(path), message, case_id))

    def warn(self, path, message: str, case_id: str | None = None) -> None:
        self.warnings.append(Problem(str(path), message, case_id))

    def __len__(self) -> int:
        return len(self.problems)

    def report(self) -> str:
        lines = []
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s) in the source data:")
            lines += [f"  {p}" for p in sorted(self.problems, key=lambda p: p.path)]
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines += [f"  {w}" for w in sorted(self.warnings, key=lambda p: p.path)]
        return "\n".join(lines)


class ConversionFailed(SynthError):
    """The source data has problems and skipping was not allowed; nothing was written."""

    def __init__(self, source, problems: list[Problem]):
        self.problems = list(problems)
        first = sorted(self.problems, key=lambda p: p.path)[0]
        super().__init__(
            f"{source}: {len(self.problems)} problem(s) in the source data (listed above), first: {first}; "
            f"nothing was written; fix the files or rerun with --allow-skip to leave them out")
