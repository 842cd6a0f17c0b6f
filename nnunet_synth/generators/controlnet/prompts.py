"""Captions of the training cases: one ``--prompt`` or a CSV of case -> prompt."""
from __future__ import annotations

import csv
from pathlib import Path

from nnunet_synth.errors import SynthError


def read_prompt_csv(path: str | Path, known_cases: list[str]) -> dict[str, str]:
    """``case,prompt`` rows; a missing file, missing columns, unknown or repeated cases, or empty prompts are errors."""
    path = Path(path)
    if not path.is_file():
        raise SynthError(f"--prompt-csv {path}: no such file")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"case", "prompt"} <= {f.strip() for f in reader.fieldnames}:
            raise SynthError(f"{path}: needs a header with the columns case,prompt (got {reader.fieldnames})")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    prompts: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        case, text = row["case"], row["prompt"]
        if case in prompts:
            raise SynthError(f"{path}, line {line}: case {case} is given twice")
        if not text:
            raise SynthError(f"{path}, line {line}: case {case} has an empty prompt")
        prompts[case] = text
    unknown = sorted(set(prompts) - set(known_cases))
    if unknown:
        raise SynthError(f"{path}: unknown case(s) {', '.join(unknown[:5])} (not cases of the dataset)")
    return prompts


def training_captions(case_ids: list[str], prompt: str | None, prompt_csv: str | None,
                      known_cases: list[str]) -> dict[str, str]:
    """The caption of every training case: its CSV prompt, else ``prompt``."""
    from_csv = read_prompt_csv(prompt_csv, known_cases) if prompt_csv else {}
    if prompt is None and not from_csv:
        raise SynthError("controlnet needs a text condition: give --prompt TEXT (e.g. \"Breast, Ultrasound\") "
                         "or --prompt-csv FILE")
    missing = [c for c in case_ids if c not in from_csv and prompt is None]
    if missing:
        raise SynthError(f"{prompt_csv}: no prompt for training case(s) {', '.join(missing[:5])}; add them or give "
                         f"--prompt for the rest")
    return {c: from_csv.get(c, prompt) for c in case_ids}
