"""Resumable training state of the Stable Diffusion generators: accelerate checkpoints with a total limit.

    MODEL_DIR/checkpoints/checkpoint-<step>/   accelerator.save_state(...) + progress.json

A checkpoint counts only once its ``progress.json`` is written (last, after
every process saved its part), so a crash during a save leaves the previous
checkpoint as the one a rerun resumes from. The oldest complete checkpoints
beyond the limit are deleted after a save, as in diffusers' training examples.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from nnunet_synth.atomic import give_files_the_umask_mode, write_json_atomic

FOLDER = "checkpoints"
PROGRESS = "progress.json"


def _step(path: Path) -> int:
    try:
        return int(path.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def complete_checkpoints(model_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(model_dir) / FOLDER
    if not root.is_dir():
        return []
    found = [p for p in root.glob("checkpoint-*") if _step(p) >= 0 and (p / PROGRESS).is_file()]
    return sorted(found, key=_step)


def latest_checkpoint(model_dir: Path) -> tuple[Path, int] | tuple[None, int]:
    """(the newest complete checkpoint, its step), or (None, 0)."""
    found = complete_checkpoints(model_dir)
    if not found:
        return None, 0
    return found[-1], int(json.loads((found[-1] / PROGRESS).read_text())["step"])


def save_checkpoint(accelerator, model_dir: Path, step: int, total_limit: int) -> Path:
    """Save the accelerate state of ``step``; then keep only the newest ``total_limit`` complete checkpoints."""
    path = Path(model_dir) / FOLDER / f"checkpoint-{step}"
    if accelerator.is_main_process and path.exists():
        shutil.rmtree(path)  # an incomplete save of this step by a killed run
    accelerator.wait_for_everyone()
    accelerator.save_state(str(path))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        give_files_the_umask_mode(path)  # accelerate's safetensors files are written 0600
        write_json_atomic(path / PROGRESS, {"step": step})
        for old in complete_checkpoints(model_dir)[:-max(1, total_limit)]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return path
