"""Running a study's steps: resumable (recipes.StepRunner), trainings side by side on several GPUs.

``run_study`` runs every step (or the ``only`` ones) whose marker does not
hold its current hash. With ``gpus``, consecutive trainings that do not wait
for each other run at the same time, one per GPU (``CUDA_VISIBLE_DEVICES``);
otherwise one after another.
"""
from __future__ import annotations

import fnmatch
import os
import queue
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nnunet_synth.errors import SynthError
from nnunet_synth.recipes import StepRunner, console_script
from nnunet_synth.study.config import Study
from nnunet_synth.study.steps import Step, StudySteps, add_digests, phantom_step, phantom_written

STATE = ".study_steps"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SynthError(f"--device {device}: no CUDA device is available")
    return device


def check_environment(dry_run: bool) -> None:
    for key in ("nnUNet_raw", "nnUNet_preprocessed") + (() if dry_run else ("nnUNet_results",)):
        if not os.environ.get(key):
            raise SynthError(f"{key} is not set; export nnU-Net's folder variables first")


def dry_run_text(chain: StudySteps, shown_work: str) -> str:
    s = chain.study
    b = s.budget
    lines = [f"study {s.name} ({s.path}): {len(chain.steps)} steps in {shown_work}, device {chain.device}",
             f"real dataset {chain.real.name}, configuration {s.configuration}, plans {s.plans}, "
             f"folds {', '.join(map(str, s.folds))}, repeats {s.repeats}",
             "budget: " + (f"{b.epochs} epochs x {b.iterations} iterations (validation {b.val_iterations}), "
                           f"the *Short trainers" if b.short else "nnU-Net's schedule (1000 epochs x 250 iterations)"),
             "every step runs with nnUNet_extTrainer set to this package's trainers/ folder", ""]
    for number, step in enumerate(chain.steps, start=1):
        lines.append(f"[{number}/{len(chain.steps)}] {step.name}")
        lines.append(f"  run:    {step.shown(chain.work, shown_work)}")
        for label, items in (("reads: ", step.reads), ("writes:", step.writes)):
            lines.append(f"  {label} " + " ".join(i.replace(chain.work, shown_work) for i in items))
        lines.append(f"  after:  {' '.join(step.after) or '-'}")
    return "\n".join(lines)


def selected(chain: StudySteps, only: list[str] | None) -> list[Step]:
    if not only:
        return chain.steps
    out = [st for st in chain.steps if any(fnmatch.fnmatchcase(st.name, pattern) for pattern in only)]
    unknown = [p for p in only if not any(fnmatch.fnmatchcase(st.name, p) for st in chain.steps)]
    if unknown:
        raise SynthError(f"--only {' '.join(unknown)}: no such step (see --dry-run for the step names)")
    return out


class StudyRun:
    def __init__(self, study: Study, workdir: Path, device: str, self_command: list[str], rerun_hint: str,
                 gpus: list[str] | None = None):
        self.study, self.workdir = study, workdir
        self.chain = StudySteps(study, workdir, device, self_command)
        self.runner = StepRunner(workdir / STATE, rerun_hint=rerun_hint)
        self.gpus = gpus or []

    def env(self, step: Step, gpu: str | None = None) -> dict:
        return step_environment(step, self.chain.device, gpu)

    def command(self, step: Step) -> list[str]:
        changed = self.runner.changed(step.name, step.digest)
        words = [console_script(step.command[0]), *step.command[1:]]
        if changed:
            words += step.on_change
        elif step.resume and Path(step.resume[0]).exists():
            words.append(step.resume[1])  # an interrupted training continues from its last checkpoint
        return words

    def run_one(self, number: int, total: int, step: Step, gpu: str | None = None) -> bool:
        if step.internal:
            return self.run_internal(number, total, step)
        if self.runner.changed(step.name, step.digest):
            for folder in self.stale(step):
                if Path(folder).is_relative_to(self.workdir) and Path(folder).exists():
                    shutil.rmtree(folder)  # the study's own output of the old settings
        details = {"own": step.own_digest, "after": {d: self.chain.by_name[d].digest for d in step.after}}
        return self.runner.run(number, total, step.name, self.command(step), self.env(step, gpu), digest=step.digest,
                               details=details)

    def stale(self, step: Step) -> list[str]:
        """The folders to remove before a changed step reruns: ``clear``, or only the ``clear_for`` folders of
        the dependencies that changed when nothing else did (as the marker's details record it)."""
        before = (self.runner.recorded(step.name) or {}).get("details") or {}
        now = {d: self.chain.by_name[d].digest for d in step.after}
        changed = {d for d in now if before.get("after", {}).get(d) != now[d]}
        if step.clear_for and before.get("own") == step.own_digest and changed <= set(step.clear_for):
            return [step.clear_for[d] for d in sorted(changed)]
        return step.clear

    def run_internal(self, number: int, total: int, step: Step) -> bool:
        if self.runner.done(step.name, step.digest):
            print(f"[{number}/{total}] {step.name}: done before, skipped", flush=True)
            return False
        print(f"\n[{number}/{total}] {step.name}", flush=True)
        start = time.time()
        self.runner.marker(step.name).unlink(missing_ok=True)
        if step.name == "validation-sets":
            write_validation_sets(self.chain)
        elif step.name == "report":
            from nnunet_synth.study.report import write_report

            write_report(self.chain, self.runner)
        else:
            raise AssertionError(f"unknown internal step {step.name}")
        self.runner.record(step.name, step.digest, time.time() - start)
        return True

    def check_ready(self, steps: list[Step]) -> None:
        """--only: every step the chosen ones wait for must have finished with its current settings."""
        chosen = {st.name for st in steps}
        for step in steps:
            missing = [d for d in step.after if d not in chosen
                       and not self.runner.done(d, self.chain.by_name[d].digest)]
            if missing:
                raise SynthError(f"step '{step.name}' waits for {', '.join(missing)}, which did not finish with "
                                 f"the current settings; run those first")

    def run(self, only: list[str] | None = None) -> int:
        """Run the (selected) steps in order; returns how many ran."""
        steps = selected(self.chain, only)
        if only:
            self.check_ready(steps)
        total, ran, i = len(steps), 0, 0
        while i < len(steps):
            batch = [steps[i]]
            if self.gpus and steps[i].training:
                while (i + len(batch) < len(steps) and steps[i + len(batch)].training
                       and not set(steps[i + len(batch)].after) & {b.name for b in batch}):
                    batch.append(steps[i + len(batch)])
            if len(batch) == 1:
                ran += self.run_one(i + 1, total, steps[i], self.gpus[0] if self.gpus else None)
            else:
                ran += self.run_side_by_side(i, total, batch)
            i += len(batch)
        return ran

    def run_side_by_side(self, start: int, total: int, batch: list[Step]) -> int:
        free: queue.Queue = queue.Queue()
        for gpu in self.gpus:
            free.put(gpu)

        def one(item):
            number, step = item
            gpu = free.get()
            try:
                return self.run_one(number, total, step, gpu)
            finally:
                free.put(gpu)

        with ThreadPoolExecutor(max_workers=len(self.gpus)) as pool:
            futures = [pool.submit(one, (start + k + 1, step)) for k, step in enumerate(batch)]
            results, errors = [], []
            for future in futures:
                try:
                    results.append(future.result())
                except SynthError as e:
                    errors.append(e)
        if errors:
            raise errors[0]  # the others finished (or failed) first; their markers are written
        return sum(results)


def step_environment(step: Step, device: str, gpu: str | None = None) -> dict:
    from nnunet_synth.environment import trainer_folder

    env = dict(os.environ)
    env.setdefault("nnUNet_extTrainer", trainer_folder())
    if device == "cpu":
        env.setdefault("nnUNet_compile", "false")  # compiling costs more than a CPU training of a study saves
    env.update(step.env)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def write_phantom(study: Study, workdir: Path, device: str, rerun_hint: str) -> None:
    """[phantom] studies: run the phantom step first, since the rest of the chain is built from its datasets."""
    step = phantom_step(study)
    add_digests([step], str(workdir))
    runner = StepRunner(workdir / STATE, rerun_hint=rerun_hint)
    runner.run(1, 1, step.name, [console_script(step.command[0]), *step.command[1:]],
               step_environment(step, device), digest=step.digest,
               details={"own": step.own_digest, "after": {}})


def run_study(path: Path, label: str, workdir: Path, device: str, self_command: list[str], dry_run: bool = False,
              only: list[str] | None = None, gpus: list[str] | None = None, shown_work: str | None = None) -> int:
    """Check the config, then print the dry run or run the (selected) steps; returns the exit code.

    Config problems are printed one per line (exit 2). A [phantom] study writes its datasets first; its dry
    run, when they are not written yet, lists the chain from a phantom written into a temporary folder.
    """
    import sys
    import tempfile

    from nnunet_synth.study.config import StudyConfigError, check_study_data, load_config

    def refuse(problems):
        for problem in problems:
            print(f"nnunet-synth study: error: {problem}", file=sys.stderr)
        return 2

    try:
        study = load_config(path, label, check_data=False)
    except StudyConfigError as e:
        return refuse(e.problems)
    hint = " ".join(self_command)
    scratch = None
    if study.phantom is not None and not phantom_written(study):
        if dry_run:
            scratch = tempfile.mkdtemp(prefix="nnunet_synth_phantom_")
            from nnunet_synth.phantom.datasets import make_phantom_datasets

            p = study.phantom
            make_phantom_datasets(scratch, p.first_id, p.n_train, p.n_test, p.seed, p.image_size,
                                  p.scanners.split(","), progress=False)
        else:
            os.makedirs(workdir, exist_ok=True)
            write_phantom(study, workdir, device, hint)
    saved = os.environ.get("nnUNet_raw")
    try:
        if scratch is not None:
            os.environ["nnUNet_raw"] = scratch
        try:
            check_study_data(study)
        except StudyConfigError as e:
            return refuse(e.problems)
        runner = StudyRun(study, workdir, device, self_command, rerun_hint=hint, gpus=gpus)
        taken = runner.chain.foreign_datasets()
        if taken:
            return refuse([f"{study.path}: {problem}" for problem in taken])
        if dry_run:
            print(dry_run_text(runner.chain, shown_work or str(workdir)))
            return 0
    finally:
        if scratch is not None:
            os.environ["nnUNet_raw"] = saved
            shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(workdir, exist_ok=True)
    ran = runner.run(only)
    print(f"\nstudy {study.name}: {ran} step(s) ran; report: {workdir / 'report.md'}")
    return 0


def write_validation_sets(chain: StudySteps) -> None:
    """WORK/tests/validation_fF: images/ and labels/ linking to fold F's validation cases (real, never synthetic).

    Each folder is built beside its place and renamed into it, so a killed run leaves no half folder.
    """
    real = chain.real
    for f in chain.study.folds:
        target = Path(chain.work) / "tests" / f"validation_f{f}"
        tmp = target.parent / f".tmp-{os.getpid()}-{target.name}"
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "images").mkdir(parents=True)
        (tmp / "labels").mkdir()
        for case in chain.folds[f]["val"]:
            for c, image in enumerate(real.image_files(case)):
                (tmp / "images" / f"{case}_{c:04d}{real.file_ending}").symlink_to(Path(image).resolve())
            (tmp / "labels" / f"{case}{real.file_ending}").symlink_to(Path(real.label_file(case)).resolve())
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
