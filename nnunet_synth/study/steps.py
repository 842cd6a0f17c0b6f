"""A study config as a chain of steps: each an exact command, what it reads and writes, what it waits for.

Steps, per study fold F and repeat R (names are the markers' names):

  phantom                     [phantom] studies: nnunet-synth phantom writes the real and test datasets
  plan                        nnUNetv2_plan_and_preprocess of the real dataset
  validation-sets             WORK/tests/validation_fF: links to fold F's validation cases (the in-domain test)
  fit-G-fF                    nnunet-synth fit G on fold F's training cases (or the generator's fit_fold)
  generate-G-fF               nnunet-synth generate G for fold F's training cases
  rankN...-fX                 targeted arms: the baseline trained on ranking fold X (WORK/ranking/N...)
  generate-G-worstN-fF        targeted arms: generate for the N cases the ranking models segment worst
  train-BASELINE-fF-r0        first, when a generator is inspected: the inspection's baseline
  inspect-G-fF                generators with `inspect`: nnunet-synth inspect (figures, the filter's decisions)
  twins-G-fF                  diffboost arms: nnunet-synth twins (preprocessed beside the real cases)
  expand-ARM-fF               expansion arms: nnunet-synth expand (real + synthetic, leak-free folds)
  train-ARM-fF-rR             nnUNetv2_train, nnUNet_results = WORK/results/rR
  cross-eval-fF-rR            nnunet-synth cross-eval of every arm on validation_fF and the external tests
  report                      WORK/report.md and WORK/results.json

A step's hash covers its command, the variables it is given and its
dependencies' hashes, so a changed setting reruns that step and every step
after it, and nothing else.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_synth.recipes import step_hash
from nnunet_synth.study.config import Arm, Study, generator_training_cases, open_real, ranking_folds, study_folds

WORK = "<work>"  # the work folder in hashed commands, so that the folder's own path does not change a hash


@dataclass
class Step:
    name: str
    command: list[str]                   # the first word is a console script (nnunet-synth, nnUNetv2_*)
    after: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    env: dict = field(default_factory=dict)           # variables this step is given (shown, hashed)
    settings: dict = field(default_factory=dict)      # more hashed settings (e.g. the cases of a fold)
    on_change: list[str] = field(default_factory=list)  # appended when a step that finished before changed
    clear: list[str] = field(default_factory=list)    # folders of the work folder removed before a changed rerun
    # instead of ``clear``, when only these dependencies changed: the folders that are stale then
    clear_for: dict = field(default_factory=dict)
    resume: tuple[str, str] | None = None             # (file, flag): flag appended while file exists (resume)
    internal: bool = False                            # runs in the study's own process
    training: bool = False                            # an nnU-Net training (side by side with --gpus)
    digest: str = ""
    own_digest: str = ""  # without the dependencies' hashes

    def shown(self, work: str, shown_work: str) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return ((env + " " if env else "") + shlex.join(self.command)).replace(work, shown_work)


def add_digests(steps: list[Step], work: str) -> dict[str, Step]:
    """Set each step's hashes (in chain order: a step's dependencies come first); returns name -> step."""
    by_name = {}
    for step in steps:
        # an internal step is defined by its name and settings, not by where the config file lies
        command = ["internal", step.name] if step.internal else [w.replace(work, WORK) for w in step.command]
        env = {k: v.replace(work, WORK) for k, v in step.env.items()}
        step.digest = step_hash(command, env, step.settings, [by_name[d].digest for d in step.after])
        step.own_digest = step_hash(command, env, step.settings)
        by_name[step.name] = step
    return by_name


def phantom_step(study: Study) -> Step:
    """[phantom] studies: the step that writes the real and test datasets (it runs before the chain is built)."""
    return Step("phantom", study.phantom.command(),
                writes=[f"$nnUNet_raw/{d.folder_name}" for d in study.phantom.plan()])


def phantom_written(study: Study) -> bool:
    """Every dataset of the study's [phantom] is complete under $nnUNet_raw."""
    import os

    from nnunet_synth.phantom.datasets import dataset_complete

    root = Path(os.environ["nnUNet_raw"])
    return all(dataset_complete(root, d) for d in study.phantom.plan())


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text.title())


class StudySteps:
    """The steps of ``study`` in ``workdir`` on ``device``; ``self_command`` reruns the study (internal steps)."""

    def __init__(self, study: Study, workdir: Path, device: str, self_command: list[str]):
        from nnunet_synth.raw_dataset import dataset_id_of

        self.study, self.work, self.device, self.self_command = study, str(workdir), device, self_command
        self.real = open_real(study.dataset)
        self.real_id = dataset_id_of(self.real.name)
        self.short = self.real.name.split("_", 1)[1]
        self.folds = study_folds(self.real)
        self.ids = self._allocate_ids()
        self.steps: list[Step] = []
        self._build()
        self.by_name = add_digests(self.steps, self.work)

    # ------------------------------------------------------------ ids and names

    def _allocate_ids(self) -> dict:
        """Dataset ids from first_id on: synthetic sets, targeted sets, expanded datasets (in config order)."""
        s = self.study
        next_id = s.first_id if s.first_id is not None else self.real_id + 1
        ids = {}
        used = [g for g in s.generators if any(a.generator == g and a.targeted is None for a in s.arms)]
        keys = [("synthetic", g, f) for g in used for f in s.folds]
        keys += list(dict.fromkeys(("targeted", a.generator, a.targeted, f) for a in s.arms if a.targeted
                                   for f in s.folds))
        keys += [("expanded", a.name, f) for a in s.arms if a.use == "expansion" for f in s.folds]
        for key in keys:
            ids[key] = next_id
            next_id += 1
        return ids

    def written_datasets(self) -> dict[int, str]:
        """id -> name of every raw dataset the study writes."""
        out = {}
        for step in self.steps:
            for path in step.writes:
                m = re.fullmatch(r"\$nnUNet_raw/Dataset(\d+)_([^/]+)", path)
                if m:
                    out[int(m.group(1))] = m.group(2)
        return out

    def foreign_datasets(self) -> list[str]:
        """The ids the study would write that hold another dataset (the study overwrites only its own)."""
        import os

        root = Path(os.environ.get("nnUNet_raw", ""))
        problems = []
        for dataset_id, name in sorted(self.written_datasets().items()):
            for found in sorted(root.glob(f"Dataset{dataset_id:03d}_*")):
                if found.name != f"Dataset{dataset_id:03d}_{name}":
                    problems.append(f"dataset id {dataset_id} is taken by {found.name} (the study writes "
                                    f"Dataset{dataset_id:03d}_{name}); set [study] first_id to free ids")
        return problems

    def raw(self, dataset_id: int, name: str) -> str:
        return f"$nnUNet_raw/Dataset{dataset_id:03d}_{name}"

    def pre(self, dataset_id: int, name: str) -> str:
        return f"$nnUNet_preprocessed/Dataset{dataset_id:03d}_{name}"

    def model_dir(self, generator: str, fold: int) -> str:
        spec = self.study.generators[generator]
        return spec.model if spec.model is not None else f"{self.work}/models/{generator}_f{fold}"

    def results(self, repeat: int) -> str:
        return f"{self.work}/results/r{repeat}"

    def synthetic(self, arm: Arm, fold: int) -> tuple[int, str, str]:
        """(id, name, step) of the synthetic set an arm uses on ``fold``."""
        if arm.targeted:
            key = ("targeted", arm.generator, arm.targeted, fold)
            name = f"{self.short}{_safe(arm.generator)}Worst{arm.targeted.worst}F{fold}"
            return self.ids[key], name, f"generate-{arm.generator}-worst{arm.targeted.worst}-f{fold}"
        name = f"{self.short}{_safe(arm.generator)}F{fold}"
        return self.ids[("synthetic", arm.generator, fold)], name, f"generate-{arm.generator}-f{fold}"

    def trained_dataset(self, arm: Arm, fold: int) -> tuple[int, str]:
        if arm.use == "expansion":
            return self.ids[("expanded", arm.name, fold)], f"{self.short}{_safe(arm.name)}F{fold}"
        return self.real_id, self.short

    # ------------------------------------------------------------ the chain

    def _build(self) -> None:
        s = self.study
        if s.phantom is not None:
            self.add(phantom_step(s))
        self.add(Step("plan", ["nnUNetv2_plan_and_preprocess", "-d", str(self.real_id), "-c", s.configuration,
                               "-np", str(s.num_processes), "-npfp", str(s.num_processes),
                               "--verify_dataset_integrity"], after=["phantom"] if s.phantom else [],
                      reads=[self.raw(self.real_id, self.short)], writes=[self.pre(self.real_id, self.short)]))
        self.add(Step("validation-sets", [*self.self_command, "--only", "validation-sets"], internal=True,
                      settings={"validation": {f: sorted(self.folds[f]["val"]) for f in s.folds}},
                      reads=[self.raw(self.real_id, self.short)],
                      writes=[f"{self.work}/tests/validation_f{f}" for f in s.folds]))
        generators = [g for g in s.generators if any(a.generator == g for a in s.arms)]
        for g in generators:
            for f in s.folds:
                self._fit_and_generate(g, f)
        inspected = [g for g in generators if s.generators[g].inspect is not None]
        for f in s.folds:
            if inspected:
                self._train(s.baseline, f, 0)  # the inspection's baseline, before the arms that use its decisions
            for g in inspected:
                self._inspect(g, f)
        done_targets = set()
        for arm in s.arms:
            if arm.targeted and (arm.generator, arm.targeted) not in done_targets:
                done_targets.add((arm.generator, arm.targeted))
                for f in s.folds:
                    self._targeted(arm, f)
        for g in sorted({a.generator for a in s.arms if a.use == "diffboost"}):
            for f in s.folds:
                syn_id, syn_name, gen_step = self.synthetic(next(a for a in s.arms if a.generator == g
                                                                 and a.use == "diffboost"), f)
                self.add(Step(f"twins-{g}-f{f}", ["nnunet-synth", "twins", "-d", str(self.real_id), "-s", str(syn_id),
                                                  "-c", s.configuration, "-p", s.plans, "--allow-real-only",
                                                  "-np", str(s.num_processes)],
                              after=["plan", self.after_generation(g, gen_step, f)],
                              reads=[self.raw(syn_id, syn_name)],
                              writes=[f"{self.pre(self.real_id, self.short)}/<configuration data>/diffboost_twins"]))
        for arm in s.arms:
            if arm.use != "expansion":
                continue
            for f in s.folds:
                syn_id, syn_name, gen_step = self.synthetic(arm, f)
                exp_id, exp_name = self.trained_dataset(arm, f)
                self.add(Step(f"expand-{arm.name}-f{f}",
                              ["nnunet-synth", "expand", "-d", str(self.real_id), "-s", str(syn_id), "-o", str(exp_id),
                               "--name", exp_name, *(["--synthetic-only"] if arm.synthetic_only else []),
                               *([] if arm.filtered else ["--include-filtered"]),
                               "-p", s.plans, "--preprocess", s.configuration, "-np", str(s.num_processes),
                               "--overwrite"],
                              after=["plan", gen_step if arm.targeted else self.after_generation(arm.generator,
                                                                                                 gen_step, f)],
                              reads=[self.raw(self.real_id, self.short),
                                                               self.raw(syn_id, syn_name)],
                              writes=[self.raw(exp_id, exp_name), self.pre(exp_id, exp_name)]))
        # every training first, so that --gpus finds them side by side; then one cross-eval per fold and repeat
        for r in range(s.repeats):
            for f in s.folds:
                for arm in s.arms:
                    self._train(arm, f, r)
        for r in range(s.repeats):
            for f in s.folds:
                self._cross_eval(f, r)
        self.add(Step("report", [*self.self_command, "--only", "report"], internal=True,
                      after=[f"cross-eval-f{f}-r{r}" for f in s.folds for r in range(s.repeats)],
                      reads=[f"{self.work}/cross_eval", f"{self.work}/.study_steps"],
                      writes=[f"{self.work}/report.md", f"{self.work}/results.json"]))

    def add(self, step: Step) -> None:
        self.steps.append(step)

    def has(self, name: str) -> bool:
        return any(st.name == name for st in self.steps)

    def after_generation(self, g: str, gen_step: str, f: int) -> str:
        """The step after which fold ``f``'s synthetic set of ``g`` is final: its inspection, else its generation."""
        return f"inspect-{g}-f{f}" if self.study.generators[g].inspect is not None else gen_step

    def baseline_folder(self, results: str) -> str:
        s = self.study
        return f"{results}/{self.real.name}/{s.trainer(s.baseline)}__{s.plans}__{s.configuration}"

    def _inspect(self, g: str, f: int) -> None:
        s, spec = self.study, self.study.generators[g]
        plain = next(a for a in s.arms if a.generator == g and a.targeted is None)
        syn_id, syn_name, gen_step = self.synthetic(plain, f)
        i = spec.inspect
        baseline = self.baseline_folder(self.results(0))
        self.add(Step(f"inspect-{g}-f{f}",
                      ["nnunet-synth", "inspect", str(syn_id), "-d", str(self.real_id), "--baseline", baseline,
                       "--fold", str(f), *(["--filter", i.band.text()] if i.band is not None else []),
                       "--copy-threshold", f"{i.copy_threshold:g}", "--device", self.device,
                       *(["--disable-tta"] if i.disable_tta else [])],
                      after=[gen_step, f"train-{s.baseline.name}-f{f}-r0"], reads=[self.raw(syn_id, syn_name), baseline],
                      writes=[f"{self.raw(syn_id, syn_name)}/inspect", f"{self.raw(syn_id, syn_name)}/synthesis.json"],
                      on_change=["--overwrite"]))

    def _options(self, options: dict, settings) -> list[str]:
        """A table of settings fields as the options of the command (a field's ``flag`` metadata, e.g. --lr)."""
        import dataclasses

        flags = {f.name: f.metadata.get("flag", "--" + f.name.replace("_", "-")) for f in dataclasses.fields(settings)}
        words = []
        for key, value in options.items():
            flag = flags[key]
            if value is True:
                words.append(flag)
            elif value is False or value is None:
                continue
            elif isinstance(value, list):
                words += [flag, *map(str, value)]
            else:
                words += [flag, str(value)]
        return words

    def _fit_and_generate(self, g: str, f: int) -> None:
        import dataclasses

        from nnunet_synth.generators import registry

        spec, s = self.study.generators[g], self.study
        after = ["plan"]
        model = self.model_dir(g, f)
        if spec.model is None:
            fields = {x.name for x in dataclasses.fields(registry.get(spec.name).fit_settings)}
            cpu = ["--cpu"] if self.device == "cpu" and "cpu" in fields and "cpu" not in spec.fit else []
            self.add(Step(f"fit-{g}-f{f}", ["nnunet-synth", "fit", spec.name, "-d", str(self.real_id),
                                            "--fold", spec.fit_fold if spec.fit_fold is not None else str(f),
                                            "-o", model, *cpu,
                                            *self._options(spec.fit, registry.get(spec.name).fit_settings)],
                          after=["plan"], settings={"cases": generator_training_cases(spec, self.folds, f)},
                          reads=[self.raw(self.real_id, self.short)], writes=[model], clear=[model]))
            after = [f"fit-{g}-f{f}"]
        plain = [a for a in s.arms if a.generator == g and a.targeted is None]
        if not plain:
            return  # only targeted arms use this generator: they generate their own sets
        any_arm = plain[0]
        syn_id, syn_name, name = self.synthetic(dataclasses.replace(any_arm, targeted=None), f)
        self.add(Step(name, self._generate(spec, model, syn_id, syn_name)
                      + ["--cases", *sorted(self.folds[f]["train"])],
                      after=after, reads=[model, self.raw(self.real_id, self.short)],
                      writes=[self.raw(syn_id, syn_name)], on_change=["--overwrite"]))

    def _generate(self, spec, model: str, syn_id: int, syn_name: str) -> list[str]:
        from nnunet_synth.generators import registry

        g = dict(spec.generate)
        common = ["--mode", str(g.pop("mode")), "-k", str(g.pop("k"))]
        for key in ("seed", "prompt"):
            if key in g:
                common += [f"--{key}", str(g.pop(key))]
        return ["nnunet-synth", "generate", spec.name, "-m", model, "-d", str(self.real_id), "-o", str(syn_id),
                "--name", syn_name, *common, "--device", self.device,
                *self._options(g, registry.get(spec.name).generate_settings)]

    def _ranking_root(self, arm: Arm, f: int) -> tuple[str, str]:
        folds = ranking_folds(arm.targeted, f)
        key = "".join(map(str, folds))
        return key, f"{self.work}/ranking/{key}"

    def _targeted(self, arm: Arm, f: int) -> None:
        s = self.study
        key, root = self._ranking_root(arm, f)
        trainer = s.trainer(s.baseline)
        for r in ranking_folds(arm.targeted, f):
            name = f"rank{key}-f{r}"
            if name not in {st.name for st in self.steps}:
                self.add(self._train_step(name, self.real_id, self.short, trainer, r, root, ["plan"]))
        spec = s.generators[arm.generator]
        syn_id, syn_name, step_name = self.synthetic(arm, f)
        model = self.model_dir(arm.generator, f)
        baseline = f"{root}/{self.real.name}/{trainer}__{s.plans}__{s.configuration}"
        self.add(Step(step_name, self._generate(spec, model, syn_id, syn_name)
                      + ["--worst", str(arm.targeted.worst), "--baseline", baseline],
                      after=([f"fit-{arm.generator}-f{f}"] if spec.model is None else [])
                      + [f"rank{key}-f{r}" for r in ranking_folds(arm.targeted, f)],
                      reads=[model, baseline], writes=[self.raw(syn_id, syn_name)], on_change=["--overwrite"]))

    def _train_step(self, name: str, dataset_id: int, dataset_name: str, trainer: str, fold: int, results: str,
                    after: list[str], repeat: int = 0) -> Step:
        s, b = self.study, self.study.budget
        env = {"nnUNet_results": results}
        if b.augmentation_processes is not None:
            env["nnUNet_n_proc_DA"] = str(b.augmentation_processes)
        if b.short:
            env.update(nnUNetSynth_epochs=str(b.epochs), nnUNetSynth_iterations_per_epoch=str(b.iterations),
                       nnUNetSynth_val_iterations_per_epoch=str(b.val_iterations))
            if b.seed is not None:
                env["nnUNetSynth_seed"] = str(b.seed + repeat)
        folder = f"{results}/Dataset{dataset_id:03d}_{dataset_name}/{trainer}__{s.plans}__{s.configuration}/fold_{fold}"
        return Step(name, ["nnUNetv2_train", str(dataset_id), s.configuration, str(fold), "-tr", trainer,
                           "-p", s.plans, "-device", "cuda" if self.device.startswith("cuda") else self.device],
                    after=after, env=env, reads=[self.pre(dataset_id, dataset_name)], writes=[folder],
                    resume=(f"{folder}/checkpoint_latest.pth", "--c"), training=True)

    def _train(self, arm: Arm, f: int, r: int) -> None:
        s = self.study
        name = f"train-{arm.name}-f{f}-r{r}"
        if self.has(name):
            return  # trained earlier in the chain (the inspection's baseline)
        dataset_id, dataset_name = self.trained_dataset(arm, f)
        after = {"baseline": ["plan"], "diffboost": ["plan", f"twins-{arm.generator}-f{f}"],
                 "expansion": [f"expand-{arm.name}-f{f}"]}[arm.use]
        step = self._train_step(name, dataset_id, dataset_name, s.trainer(arm), f, self.results(r), after, r)
        inspects_with_it = arm.use == "baseline" and r == 0 and any(g.inspect for g in s.generators.values())
        if s.budget.short and not s.budget.final_validation and not inspects_with_it:
            step.env["nnUNetSynth_final_validation"] = "0"  # cross-eval predicts the fold's validation cases
        self.add(step)

    def model_spec(self, arm: Arm, f: int) -> str:
        dataset_id, _ = self.trained_dataset(arm, f)
        return f"{dataset_id}:{self.study.trainer(arm)}:{self.study.plans}:{self.study.configuration}:{f}"

    def _cross_eval(self, f: int, r: int) -> None:
        s = self.study
        tests = [f"validation={self.work}/tests/validation_f{f}"] + [f"{t.name}={t.source}" for t in s.tests]
        output = f"{self.work}/cross_eval/f{f}_r{r}"
        self.add(Step(f"cross-eval-f{f}-r{r}",
                      ["nnunet-synth", "cross-eval",
                       *[w for a in s.arms for w in ("--model", f"{a.name}={self.model_spec(a, f)}")],
                       *[w for t in tests for w in ("--test", t)], *[w for m in s.label_map for w in ("--label-map", m)],
                       "--baseline", s.baseline.name, "-o", output, "--device", self.device,
                       "--bootstrap", str(s.bootstrap), "--seed", str(s.eval_seed), "--examples", str(s.examples),
                       *(["--disable-tta"] if s.disable_tta else [])],
                      after=["validation-sets", *[f"train-{a.name}-f{f}-r{r}" for a in s.arms]],
                      env={"nnUNet_results": self.results(r)},
                      reads=[self.results(r), f"{self.work}/tests/validation_f{f}"]
                      + [t.source if t.is_folder else f"dataset {t.source}" for t in s.tests], writes=[output],
                      # cross-eval reuses existing predictions: a retrained arm needs new ones, the others' stay
                      clear=[output], clear_for={f"train-{a.name}-f{f}-r{r}": f"{output}/predictions/{a.name}"
                                                 for a in s.arms}))
