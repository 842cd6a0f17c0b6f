"""The demo: the built-in study ``demo`` (study/builtin/demo.toml) in a work folder of its own.

``run_demo`` points nnU-Net's folders into the work folder, writes the demo's
config scaled to the budget into ``WORK/demo.toml`` and runs it as a study
(``nnunet_synth.study.run.run_study``): phantom, plan, fit, generate, the
baseline, inspect, twins, expand, the trainings of every arm and repeat,
cross-eval, report. It then prints the report's table over the repeats.
``nnunet-synth demo`` (commands/demo.py) is its command line. "Scanner" is the
phantom's simulated ultrasound machine; "device" is the torch device.
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from nnunet_synth.errors import SynthError
from nnunet_synth.recipes import check_workdir_settings

DEFAULT_BUDGET = {"cpu": 15.0, "cuda": 60.0}
FILTER_MINUTES = 5.0  # CPU budgets below it: no consistency filter (see demo_config)
CONFIG_FILE = "demo.toml"


def _scaled(value: float, scale: float, low: int, high: int | None = None) -> int:
    out = max(low, int(round(value * scale)))
    return out if high is None else min(high, out)


def demo_config(budget_minutes: float, cuda: bool) -> dict:
    """The built-in demo config scaled to a budget.

    The built-in file is the 15-minute CPU schedule, measured on 2 cores (README, "The demo"). A smaller
    budget shrinks the phantom, the generator's training and the trainings; a larger one lengthens the
    trainings and the generator's training. Below ``FILTER_MINUTES`` the demo is a smoke run of the
    chain: the baseline trains too briefly to find a lesion, so it cannot judge a twin; inspect then
    reports its figures without a filter, the unfiltered arm (which would train on the same cases as the
    expansion arm) is left out, and each arm trains once.
    """
    from nnunet_synth.study.config import builtin_path, read_toml

    if not budget_minutes > 0:
        raise SynthError(f"--budget {budget_minutes:g}: give a positive number of minutes")
    config = copy.deepcopy(read_toml(builtin_path("demo")))
    s = budget_minutes / (DEFAULT_BUDGET["cuda"] if cuda else DEFAULT_BUDGET["cpu"])
    phantom, budget = config["phantom"], config["budget"]
    fit, generate = config["generators"]["ddpm"]["fit"], config["generators"]["ddpm"]["generate"]
    if cuda:
        # a GPU trains the full-size phantom; the generator on 64-pixel patches with wider channels
        phantom.update(n_train=60, n_test=30)
        phantom.pop("image_size")
        fit.update(channels=[32, 64, 128], patch_size=64, batch_size=16, train_steps=_scaled(4000, s, 200))
        generate.update(steps=50)
        budget.update(epochs=_scaled(50, s, 2), iterations=100, val_iterations=10)
        budget.pop("augmentation_processes")  # nnU-Net's own worker count feeds a GPU
        config["evaluation"]["examples"] = 3
        config["study"]["num_processes"] = 2
        return config
    phantom.update(n_train=_scaled(phantom["n_train"], s, 10, 40), n_test=_scaled(phantom["n_test"], s, 4, 12))
    fit.update(train_steps=_scaled(fit["train_steps"], s, 5))
    budget.update(epochs=_scaled(budget["epochs"], min(s, 1.0), 1), iterations=_scaled(budget["iterations"], s, 2))
    if s < 1:
        config["evaluation"]["bootstrap"] = _scaled(2000, s, 200, 2000)
    if budget_minutes < FILTER_MINUTES:
        config["generators"]["ddpm"]["inspect"].pop("filter")
        del config["arms"]["expansion_unfiltered"]
        config["study"]["repeats"] = 1
    return config


@contextmanager
def demo_folders(workdir: Path, device: str, create: bool = True):
    """nnU-Net's variables pointed into the work folder while the demo runs; the caller's are restored after."""
    names = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_def_n_proc", "nnUNet_n_proc_DA")
    saved = {k: os.environ.get(k) for k in names}
    folders = {k: workdir / k for k in names[:3]}
    for key, folder in folders.items():
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        os.environ[key] = str(folder)
    # on a CPU the demo's images are tiny: one export process and one augmentation worker per training
    # (2 cores; a second worker only competes with the network for them)
    os.environ.setdefault("nnUNet_def_n_proc", "1" if device == "cpu" else "2")
    os.environ.setdefault("nnUNet_n_proc_DA", "1" if device == "cpu" else "6")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def pooled_table(report: str) -> str:
    """The report's table over the repeats (its first results section)."""
    lines = report.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("## Fold ") and " over " in line), None)
    if start is None:
        raise SynthError("the study's report.md has no table over the repeats")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start:end]).strip()


def run_demo(workdir, budget: float | None = None, device: str = "auto", dry_run: bool = False,
             only: list[str] | None = None) -> int:
    """Run (or resume) the demo in ``workdir`` and print its table; returns the exit code."""
    import tomli_w

    from nnunet_synth.atomic import write_text_atomic
    from nnunet_synth.study.run import resolve_device, run_study

    device = resolve_device(device)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    # a float, so that --budget 15, budget=15 and the default 15.0 are the same settings
    budget = float(budget) if budget is not None else DEFAULT_BUDGET[kind]
    config = demo_config(budget, kind == "cuda")
    shown = str(workdir)
    workdir = Path(workdir).resolve()
    text = f"# nnunet-synth demo --budget {budget:g} on {kind}: the built-in study 'demo' scaled to the budget\n"
    text += tomli_w.dumps(config)
    self_command = ["nnunet-synth", "demo", "-w", str(workdir), "--budget", f"{budget:g}", "--device", device]
    if dry_run:  # nothing is written into the work folder
        with tempfile.TemporaryDirectory() as scratch, demo_folders(workdir, device, create=False):
            path = Path(scratch) / CONFIG_FILE
            path.write_text(text)
            return run_study(path, f"{shown}/{CONFIG_FILE}", workdir, device, self_command, dry_run=True,
                             shown_work=shown)
    workdir.mkdir(parents=True, exist_ok=True)
    # the phantom's size follows the budget, so a work folder holds one budget and device
    check_workdir_settings(workdir / "demo_settings.json", {"budget_minutes": budget, "device": device,
                                                            "config": config},
                           describe=lambda p: f"budget {p.get('budget_minutes')}, device {p.get('device')}")
    path = workdir / CONFIG_FILE
    if not path.exists() or path.read_text() != text:
        write_text_atomic(path, text)
    print(f"nnunet-synth demo in {workdir} on {device}, budget {budget:g} min: the study {path}", flush=True)
    start = time.time()
    with demo_folders(workdir, device):
        code = run_study(path, str(path), workdir, device, self_command, only=only)
    if code != 0 or only:
        return code
    print("\nTrained on scanner A (fold 0); tested on its validation cases and on scanners A, B, C. Each case's "
          "metric is averaged over the repeats; p: Wilcoxon signed-rank against the baseline, Holm-corrected.\n")
    print(pooled_table((workdir / "report.md").read_text()))
    print(f"\nreport: {workdir / 'report.md'}; this run: {(time.time() - start) / 60:.1f} min")
    return 0
