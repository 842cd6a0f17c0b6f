"""The demo's chain: phantom -> plan -> fit -> twins/new -> twin-prep, expand -> three trainings -> cross-eval.

``run_demo`` runs it in a work folder with resumable steps (each a subprocess
whose command is printed) and prints the results table; ``nnunet-synth demo``
(nnunet_synth/commands/demo.py) is its command line, and its --help lists the
steps. "Scanner" is the phantom's simulated ultrasound machine; "device" is the
torch device the steps run on.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nnunet_synth.atomic import read_json
from nnunet_synth.environment import trainer_folder
from nnunet_synth.errors import SynthError
from nnunet_synth.recipes import StepRunner, check_workdir_settings, console_script

TRAIN_ID, TEST_IDS = 700, {"A": 701, "B": 702, "C": 703}
TWINS_ID, NEW_ID, EXPANDED_ID = 704, 705, 710
CONFIG = "2d"
TRAINERS = {"baseline": "nnUNetTrainerShort", "diffboost": "nnUNetTrainerDiffBoostShort",
            "synthexpand": "nnUNetTrainerSynthExpandShort"}


@dataclass(frozen=True)
class Schedule:
    n_train: int
    n_test: int
    image_rows: int | None  # phantom rows per image (None: each scanner's own)
    ddpm_channels: tuple[int, ...]
    ddpm_patch: int
    ddpm_batch: int
    ddpm_steps: int
    sampling_steps: int
    k_twins: int
    k_new: int
    epochs: int
    iterations: int
    val_iterations: int


def schedule_for(budget_minutes: float, cuda: bool) -> Schedule:
    """Schedules that fit the budget; the CPU figures were measured on 2 cores (README)."""
    if budget_minutes <= 0:
        raise SynthError(f"--budget {budget_minutes}: give a positive number of minutes")
    s = budget_minutes / 15.0
    if cuda:
        return Schedule(n_train=60, n_test=30, image_rows=None, ddpm_channels=(32, 64, 128), ddpm_patch=64, ddpm_batch=16,
                        ddpm_steps=max(200, int(4000 * s)), sampling_steps=50, k_twins=2, k_new=1,
                        epochs=max(2, int(50 * s)), iterations=100, val_iterations=10)
    # On a CPU, nnU-Net's prediction of the test scanners dominates: smaller images keep
    # the network (and its sliding window) small.
    return Schedule(n_train=max(10, min(40, int(40 * s))), n_test=max(6, min(12, int(12 * s))),
                    image_rows=64 if s < 0.34 else 96, ddpm_channels=(16, 32, 64), ddpm_patch=64 if s >= 0.34 else 32,
                    ddpm_batch=8, ddpm_steps=max(20, int(150 * s)), sampling_steps=max(5, min(10, int(10 * s))),
                    k_twins=1, k_new=1, epochs=max(1, int(3 * s)), iterations=max(2, min(20, int(20 * s))),
                    val_iterations=max(1, min(5, int(5 * s))))


class Demo:
    def __init__(self, workdir: Path, schedule: Schedule, device: str):
        self.workdir, self.schedule, self.device = workdir, schedule, device
        self.raw, self.pre, self.results = workdir / "nnUNet_raw", workdir / "nnUNet_preprocessed", workdir / "nnUNet_results"
        self.runner = StepRunner(workdir / ".demo_steps", rerun_hint=f"`nnunet-synth demo -w {workdir}`")
        # Worker processes for preprocessing: on a CPU the demo's images are tiny, and starting a worker
        # (which imports torch and nnU-Net) costs more than the work it would take over.
        self.processes = "1" if device == "cpu" else "2"

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(nnUNet_raw=str(self.raw), nnUNet_preprocessed=str(self.pre), nnUNet_results=str(self.results),
                   nnUNet_extTrainer=trainer_folder(), nnUNet_compile="false",
                   nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "2" if self.device == "cpu" else "6"),
                   nnUNet_def_n_proc=env.get("nnUNet_def_n_proc", "2"),
                   nnUNetSynth_epochs=str(self.schedule.epochs),
                   nnUNetSynth_iterations_per_epoch=str(self.schedule.iterations),
                   nnUNetSynth_val_iterations_per_epoch=str(self.schedule.val_iterations))
        return env

    def tool(self, name: str) -> str:
        return console_script(name)

    def run_step(self, number: int, total: int, name: str, command: list[str]) -> None:
        self.runner.run(number, total, name, command, self.env())

    def train_command(self, dataset_id: int, trainer: str) -> list[str]:
        command = [self.tool("nnUNetv2_train"), str(dataset_id), CONFIG, "0", "-tr", trainer, "-device", self.device]
        # an interrupted training continues from its last checkpoint
        if self._training_folder(dataset_id, trainer).joinpath("fold_0", "checkpoint_latest.pth").exists():
            command.append("--c")
        return command

    def _training_folder(self, dataset_id: int, trainer: str) -> Path:
        names = sorted(self.results.glob(f"Dataset{dataset_id:03d}_*"))
        base = names[0] if names else self.results / f"Dataset{dataset_id:03d}_"
        return base / f"{trainer}__nnUNetPlans__{CONFIG}"

    def fold0_training_cases(self) -> list[str]:
        from nnunet_synth.raw_dataset import RawDataset
        from nnunet_synth.splits import real_folds

        real = RawDataset.open(self.raw / f"Dataset{TRAIN_ID}_PhantomA")
        return real_folds(real.name, real.case_ids(), self.pre)[0][0]["train"]

    def steps(self) -> list[tuple[str, object]]:
        s, synth, model = self.schedule, self.tool("nnunet-synth"), self.workdir / "models" / "patch_ddpm_fold0"
        gen_common = ["-m", str(model), "-d", str(TRAIN_ID), "--steps", str(s.sampling_steps), "--sampling", "full",
                      "--device", self.device]
        return [
            ("phantom", lambda: [synth, "phantom", "-o", str(self.raw), "--first-id", str(TRAIN_ID),
                                 "--n-train", str(s.n_train), "--n-test", str(s.n_test), "--workers", "2", "--quiet"]
                                + (["--image-size", str(s.image_rows)] if s.image_rows else [])),
            ("plan", lambda: [self.tool("nnUNetv2_plan_and_preprocess"), "-d", str(TRAIN_ID), "-c", CONFIG,
                              "-np", self.processes, "-npfp", self.processes, "--verify_dataset_integrity"]),
            ("fit", lambda: [synth, "fit", "patch-ddpm", "-d", str(TRAIN_ID), "--fold", "0", "-o", str(model),
                             "--channels", *map(str, s.ddpm_channels), "--res-blocks", "1",
                             "--patch-size", str(s.ddpm_patch), "--batch-size", str(s.ddpm_batch),
                             "--train-steps", str(s.ddpm_steps), "--checkpoint-every", "50"]
                            + (["--cpu"] if self.device == "cpu" else [])),
            ("twins", lambda: [synth, "generate", "patch-ddpm", *gen_common, "-o", str(TWINS_ID), "--mode", "twins",
                               "-k", str(s.k_twins), "--cases", *self.fold0_training_cases()]),
            ("new", lambda: [synth, "generate", "patch-ddpm", *gen_common, "-o", str(NEW_ID), "--mode", "new",
                             "-k", str(s.k_new), "--cases", *self.fold0_training_cases()]),
            ("twin-prep", lambda: [synth, "twins", "-d", str(TRAIN_ID), "-s", str(TWINS_ID), "-c", CONFIG,
                                   "--allow-real-only", "-np", self.processes]),
            ("expand", lambda: [synth, "expand", "-d", str(TRAIN_ID), "-s", str(TWINS_ID), "-s", str(NEW_ID),
                                "-o", str(EXPANDED_ID), "--preprocess", CONFIG, "-np", self.processes,
                                "--overwrite"]),
            ("train-baseline", lambda: self.train_command(TRAIN_ID, TRAINERS["baseline"])),
            ("train-diffboost", lambda: self.train_command(TRAIN_ID, TRAINERS["diffboost"])),
            ("train-synthexpand", lambda: self.train_command(EXPANDED_ID, TRAINERS["synthexpand"])),
            ("cross-eval", lambda: [synth, "cross-eval",
                                    "--model", f"baseline={TRAIN_ID}:{TRAINERS['baseline']}:nnUNetPlans:{CONFIG}:0",
                                    "--model", f"diffboost={TRAIN_ID}:{TRAINERS['diffboost']}:nnUNetPlans:{CONFIG}:0",
                                    "--model",
                                    f"synthexpand={EXPANDED_ID}:{TRAINERS['synthexpand']}:nnUNetPlans:{CONFIG}:0",
                                    *[a for name, i in TEST_IDS.items() for a in ("--test", f"{name}={i}")],
                                    "--baseline", "baseline", "-o", str(self.workdir / "cross_eval"),
                                    "--disable-tta", "--device", self.device, "--bootstrap", "2000"]),
        ]

    def run(self) -> None:
        steps = self.steps()
        for number, (name, make_command) in enumerate(steps, start=1):
            self.run_step(number, len(steps), name, make_command())


def results_table(summary: dict) -> str:
    """Dice and HD95 per trainer and test scanner, with Holm-corrected Wilcoxon p-values against the baseline."""
    p_values = {(r["test_set"], r["model"], r["metric"]): r["wilcoxon_p_holm"] for r in summary["comparisons"]}
    lines = ["| trainer | scanner | Dice | p (Dice) | HD95 (mm) | p (HD95) |", "|---|---|---|---|---|---|"]
    for model in summary["models"]:
        for test, per_model in summary["results"].items():
            means = per_model[model]["foreground_mean"]

            def p(metric):
                value = p_values.get((test, model, metric))
                return "—" if value is None else ("n/a" if value is None or math.isnan(value) else f"{value:.3g}")

            lines.append(f"| {model} | {test} | {means['Dice']:.3f} | {p('Dice')} | {means['HD95']:.2f} | {p('HD95')} |")
    return "\n".join(lines)


def run_demo(workdir, budget: float | None = None, device: str = "auto") -> dict:
    """Run (or resume) the demo in ``workdir``, print its table; returns the cross-eval summary."""
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if device == "cuda" and not torch.cuda.is_available():
        raise SynthError("--device cuda: no CUDA device is available")
    # a float, so that --budget 15, budget=15 and the default 15.0 are the same settings
    budget = float(budget) if budget is not None else (60.0 if device == "cuda" else 15.0)
    schedule = schedule_for(budget, device == "cuda")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    check_workdir_settings(workdir / "demo_settings.json",
                           {"budget_minutes": budget, "device": device, "schedule": asdict(schedule)},
                           describe=lambda p: f"budget {p.get('budget_minutes')}, device {p.get('device')}")
    print(f"nnunet-synth demo in {workdir} on {device}, budget {budget:g} min: {schedule}")
    start = time.time()
    Demo(workdir, schedule, device).run()
    summary = read_json(workdir / "cross_eval" / "summary.json")
    print("\nTrained on scanner A (fold 0); tested on scanners A, B, C. "
          "p: Wilcoxon signed-rank against the baseline, Holm-corrected.\n")
    print(results_table(summary))
    print(f"\nreport: {workdir / 'cross_eval' / 'report.md'} (plots in {workdir / 'cross_eval' / 'plots'})")
    print(f"this run: {(time.time() - start) / 60:.1f} min")
    return summary
