"""Recipe: lung-nodule CT (LIDC-IDRI) with the patch-wise DDPM, the seed study that needs no pretrained weights.

It chains the project's commands, each as a subprocess whose command line is
printed. A rerun with the same settings skips every step that finished (markers
in WORKDIR/.recipe_steps), so an interrupted recipe resumes; a failing step
stops the recipe with one line naming it.

The study's settings are the defaults:
  * data         LIDC-IDRI converted with `nnunet-synth convert lidc-idri SRC -d ID`
                 (3D CT, HU, label 1 = nodule, patient-grouped folds);
  * nnU-Net      configuration 3d_fullres, fold 0, nnUNetTrainer / nnUNetTrainerSynthExpand;
  * generator    patch-DDPM, preset ct3d (64^3 patches, channels 32 64 128 256, 1 res block,
                 batch 4, 40000 steps; 50 DDIM steps, tiled sampling), fitted on fold 0's
                 training cases;
  * synthetic    twins (new images for the real masks), k = 1 per training case;
  * targeted     twins for the N = 10 training cases the real-only model segments worst. The
                 ranking comes from the real-only model's cross-validation on the other folds
                 (their validation cases are exactly fold 0's training cases), trained into
                 WORKDIR/ranking_results; a synthetic case from a fold-0 validation case could
                 never train fold 0 (leakage rule), so fold 0's own validation cannot rank;
  * models       real-only, synthetic-only, real + synthetic, real + targeted synthetic;
  * evaluation   `nnunet-synth cross-eval` on --test sets (default: the real dataset's
                 imagesTs/labelsTs; fold 0's validation cases are not a test set), paired
                 against the real-only model, with report.md.

Dataset ids (default --first-id = the real id + 1): +0 synthetic twins, +1 synthetic new pairs,
+2 targeted twins, +3 targeted new pairs, +4 synthetic-only, +5 real + synthetic,
+6 real + targeted (ids of modes not chosen stay unused).

Example (nnUNet_raw, nnUNet_preprocessed, nnUNet_results set):
    python dataset_conversion/recipe_lung_patch_ddpm.py -d 951 --source ~/data/LIDC-IDRI -w lidc_work
    python dataset_conversion/recipe_lung_patch_ddpm.py -d 951 -w lidc_work --test LIDC_test=952

Smoke run (short schedules, tiny DDPM):
    nnUNetSynth_epochs=1 nnUNetSynth_iterations_per_epoch=2 nnUNetSynth_val_iterations_per_epoch=1 \\
    python dataset_conversion/recipe_lung_patch_ddpm.py -d 951 -w smoke --short --device cpu \\
        --ddpm-args "--patch-size 16 --channels 8 16 --res-blocks 1 --batch-size 2 --train-steps 3" \\
        --generate-args "--steps 2 --sampling full" --worst 1 --ranking-folds 1 --disable-tta
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from nnunet_synth.errors import SynthError
from nnunet_synth.recipes import StepRunner, check_workdir_settings, console_script

CONFIGURATION, FOLD, PRESET, K, WORST = "3d_fullres", 0, "ct3d", 1, 10
ID_OFFSETS = {"synthetic_twins": 0, "synthetic_new": 1, "targeted_twins": 2, "targeted_new": 3,
              "synthetic_only": 4, "real_synthetic": 5, "real_targeted": 6}
MODELS = ("real_only", "synthetic_only", "real_synthetic", "real_targeted")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", "--dataset", type=int, required=True, help="id of the converted LIDC-IDRI raw dataset")
    parser.add_argument("--source", help="LIDC-IDRI download to convert into --dataset first (skipped if it exists)")
    parser.add_argument("--convert-args", default="", help='extra options of `nnunet-synth convert lidc-idri`, e.g. "--xml-dir X"')
    parser.add_argument("-w", "--workdir", default="lidc_patch_ddpm", help="work folder: models, markers, cross-eval output")
    parser.add_argument("--first-id", type=int, help="first of the 7 dataset ids the recipe writes (default: --dataset + 1)")
    parser.add_argument("-c", "--configuration", default=CONFIGURATION, help=f"nnU-Net configuration (default {CONFIGURATION})")
    parser.add_argument("-f", "--fold", type=int, default=FOLD, help=f"fold to fit, train and rank for (default {FOLD})")
    parser.add_argument("--preset", default=PRESET, help=f"patch-DDPM preset (default {PRESET})")
    parser.add_argument("--mode", nargs="+", choices=("twins", "new"), default=["twins"],
                        help="synthetic pairs to make: twins and/or new pairs (default twins)")
    parser.add_argument("-k", type=int, default=K, help=f"synthetic cases per source case (default {K})")
    parser.add_argument("--worst", type=int, default=WORST, help=f"targeted: the N worst training cases (default {WORST})")
    parser.add_argument("--ranking-folds", type=int, nargs="+",
                        help="folds of the real-only cross-validation that rank the cases (default: every fold but --fold)")
    parser.add_argument("--test", action="append", metavar="NAME=ID_OR_FOLDER",
                        help="test set for cross-eval (repeatable; default: the real dataset's imagesTs/labelsTs)")
    parser.add_argument("--short", action="store_true", help="short-schedule trainers (same as --trainer-suffix Short)")
    parser.add_argument("--trainer-suffix", default="",
                        help="suffix of the trainer names, e.g. Short (schedule from the nnUNetSynth_* variables)")
    parser.add_argument("--ddpm-args", default="", help='options passed to `fit patch-ddpm`, e.g. "--train-steps 20000"')
    parser.add_argument("--generate-args", default="", help='options passed to `generate patch-ddpm`, e.g. "--steps 25"')
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when present")
    parser.add_argument("--disable-tta", action="store_true", help="no mirroring when cross-eval predicts (faster)")
    parser.add_argument("-np", "--num-processes", type=int, default=2, help="processes for preprocessing (default 2)")


def check_arguments(args) -> None:
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        if not os.environ.get(key):
            raise SynthError(f"{key} is not set; export nnU-Net's three folder variables first")
    if args.short and args.trainer_suffix not in ("", "Short"):
        raise SynthError(f"--short and --trainer-suffix {args.trainer_suffix} contradict each other; give one")
    if args.k < 1 or args.worst < 1:
        raise SynthError(f"-k ({args.k}) and --worst ({args.worst}) must be at least 1")
    if args.ranking_folds and args.fold in args.ranking_folds:
        raise SynthError(f"--ranking-folds must not hold --fold {args.fold}: its validation cases cannot "
                         f"be targeted without leaking into fold {args.fold}'s training")
    if args.source is None and _raw_folder(args.dataset) is None:
        raise SynthError(f"dataset {args.dataset} is not in {os.environ['nnUNet_raw']}; "
                         f"convert it with --source LIDC-IDRI_FOLDER (or `nnunet-synth convert lidc-idri SRC -d {args.dataset}`)")


def _raw_folder(dataset_id: int) -> Path | None:
    found = sorted(Path(os.environ["nnUNet_raw"]).glob(f"Dataset{dataset_id:03d}_*"))
    return found[0] if found else None


def default_tests(real_id: int) -> list[str]:
    folder = _raw_folder(real_id)
    if folder is None or not ((folder / "imagesTs").is_dir() and (folder / "labelsTs").is_dir()):
        raise SynthError(f"dataset {real_id} has no imagesTs/labelsTs; give test sets with --test NAME=ID_OR_FOLDER "
                         f"(fold validation cases are not a test set)")
    return [f"{folder.name.split('_', 1)[1]}_test={real_id}"]


class Recipe:
    def __init__(self, args, device: str):
        self.args, self.device = args, device
        self.workdir = Path(args.workdir).resolve()
        self.suffix = "Short" if args.short else args.trainer_suffix
        first = args.first_id if args.first_id is not None else args.dataset + 1
        self.ids = {key: first + offset for key, offset in ID_OFFSETS.items()}
        self.model = self.workdir / "models" / f"patch_ddpm_fold{args.fold}"
        self.ranking_results = self.workdir / "ranking_results"
        self.runner = StepRunner(self.workdir / ".recipe_steps",
                                 rerun_hint=f"the same recipe command (work folder {self.workdir})")

    def env(self, results: Path | None = None) -> dict:
        from nnunet_synth.environment import trainer_folder

        env = dict(os.environ)
        env.setdefault("nnUNet_extTrainer", trainer_folder())
        if results is not None:
            env["nnUNet_results"] = str(results)
        return env

    def trainer(self, base: str) -> str:
        return base + self.suffix

    def real_name(self) -> str:
        return _raw_folder(self.args.dataset).name

    def training_cases(self) -> list[str]:
        from nnunet_synth.raw_dataset import RawDataset
        from nnunet_synth.splits import real_folds

        real = RawDataset.open(self.args.dataset)
        folds = real_folds(real.name, real.case_ids(), os.environ["nnUNet_preprocessed"])[0]
        return folds[self.args.fold]["train"]

    def ranking_folds(self) -> list[int]:
        return self.args.ranking_folds or [f for f in range(5) if f != self.args.fold]

    def train(self, dataset_id: int, trainer: str, fold: int, results: Path) -> list[str]:
        command = [console_script("nnUNetv2_train"), str(dataset_id), self.args.configuration, str(fold),
                   "-tr", trainer, "-device", self.device]
        names = sorted(results.glob(f"Dataset{dataset_id:03d}_*"))
        # an interrupted training continues from its last checkpoint
        if names and (names[0] / f"{trainer}__nnUNetPlans__{self.args.configuration}" / f"fold_{fold}"
                      / "checkpoint_latest.pth").exists():
            command.append("--c")
        return command

    def generate(self, mode: str, output_key: str, name: str, sources: list[str]) -> list[str]:
        return [console_script("nnunet-synth"), "generate", "patch-ddpm", "-m", str(self.model),
                "-d", str(self.args.dataset), "-o", str(self.ids[output_key]), "--name", name, "--mode", mode,
                "-k", str(self.args.k), "--device", self.device, *sources, *shlex.split(self.args.generate_args)]

    def expand(self, output_key: str, name: str, synthetic: list[str], *extra: str) -> list[str]:
        return [console_script("nnunet-synth"), "expand", "-d", str(self.args.dataset),
                *[a for key in synthetic for a in ("-s", str(self.ids[key]))], "-o", str(self.ids[output_key]),
                "--name", name, *extra, "--preprocess", self.args.configuration,
                "-np", str(self.args.num_processes), "--overwrite"]

    def steps(self) -> list[tuple[str, object, dict | None]]:
        """(name, command maker, env) in order; commands are made when their step runs (they read earlier outputs)."""
        a, synth, results = self.args, console_script("nnunet-synth"), Path(os.environ["nnUNet_results"])
        short = lambda: self.real_name().split("_", 1)[1]  # noqa: E731 (the name exists only after conversion)
        real_trainer, synth_trainer = self.trainer("nnUNetTrainer"), self.trainer("nnUNetTrainerSynthExpand")
        ranking_folder = lambda: str(self.ranking_results / self.real_name()  # noqa: E731
                                     / f"{real_trainer}__nnUNetPlans__{a.configuration}")
        steps = []
        if a.source:
            steps.append(("convert", lambda: [synth, "convert", "lidc-idri", a.source, "-d", str(a.dataset),
                                              *shlex.split(a.convert_args)], None))
        steps += [
            ("plan", lambda: [console_script("nnUNetv2_plan_and_preprocess"), "-d", str(a.dataset),
                              "-c", a.configuration, "-np", str(a.num_processes), "-npfp", str(a.num_processes),
                              "--verify_dataset_integrity"], None),
            ("fit", lambda: [synth, "fit", "patch-ddpm", "-d", str(a.dataset), "--fold", str(a.fold),
                             "-o", str(self.model), "--preset", a.preset, *(["--cpu"] if self.device == "cpu" else []),
                             *shlex.split(a.ddpm_args)], None),
        ]
        for mode in a.mode:
            steps.append((f"generate-{mode}", lambda mode=mode: self.generate(
                mode, f"synthetic_{mode}", f"{short()}Synth{mode.capitalize()}", ["--cases", *self.training_cases()]),
                None))
        steps.append(("train-real_only", lambda: self.train(a.dataset, real_trainer, a.fold, results), None))
        for fold in self.ranking_folds():
            steps.append((f"rank-fold{fold}", lambda fold=fold: self.train(a.dataset, real_trainer, fold,
                                                                            self.ranking_results),
                          {"nnUNet_results": str(self.ranking_results)}))
        for mode in a.mode:
            steps.append((f"generate-targeted-{mode}", lambda mode=mode: self.generate(
                mode, f"targeted_{mode}", f"{short()}Targeted{mode.capitalize()}",
                ["--worst", str(a.worst), "--baseline", ranking_folder()]), None))
        synthetic, targeted = [f"synthetic_{m}" for m in a.mode], [f"targeted_{m}" for m in a.mode]
        steps += [
            ("expand-synthetic_only", lambda: self.expand("synthetic_only", f"{short()}SynthOnly", synthetic,
                                                          "--synthetic-only"), None),
            ("expand-real_synthetic", lambda: self.expand("real_synthetic", f"{short()}RealSynth", synthetic), None),
            ("expand-real_targeted", lambda: self.expand("real_targeted", f"{short()}RealTargeted", targeted), None),
        ]
        for model in MODELS[1:]:
            steps.append((f"train-{model}", lambda model=model: self.train(self.ids[model], synth_trainer, a.fold,
                                                                            results), None))
        steps.append(("cross-eval", self.cross_eval, None))
        return steps

    def model_specs(self) -> dict[str, str]:
        a = self.args
        real = f"{a.dataset}:{self.trainer('nnUNetTrainer')}:nnUNetPlans:{a.configuration}:{a.fold}"
        synth = self.trainer("nnUNetTrainerSynthExpand")
        return {"real_only": real, **{m: f"{self.ids[m]}:{synth}:nnUNetPlans:{a.configuration}:{a.fold}"
                                      for m in MODELS[1:]}}

    def cross_eval(self) -> list[str]:
        tests = self.args.test or default_tests(self.args.dataset)
        return [console_script("nnunet-synth"), "cross-eval",
                *[x for name, spec in self.model_specs().items() for x in ("--model", f"{name}={spec}")],
                *[x for t in tests for x in ("--test", t)], "--baseline", "real_only",
                "-o", str(self.workdir / "cross_eval"), "--device", self.device,
                *(["--disable-tta"] if self.args.disable_tta else [])]

    def run(self) -> None:
        steps = self.steps()
        for number, (name, make_command, extra_env) in enumerate(steps, start=1):
            env = self.env(Path(extra_env["nnUNet_results"]) if extra_env else None)
            self.runner.run(number, len(steps), name, make_command(), env)


def check_settings(workdir: Path, args) -> None:
    """A work folder belongs to one set of settings: a rerun with others would mix models."""
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in ("workdir", "num_processes")}
    check_workdir_settings(workdir / "recipe_settings.json", settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
        import torch

        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        if device == "cuda" and not torch.cuda.is_available():
            raise SynthError("--device cuda: no CUDA device is available")
        workdir = Path(args.workdir).resolve()
        check_settings(workdir, args)
        recipe = Recipe(args, device)
        recipe.run()
    except SynthError as e:
        print(f"recipe_lung_patch_ddpm: error: {e}", file=sys.stderr)
        return 2
    print(f"\nreport: {workdir / 'cross_eval' / 'report.md'} (summary.json, per_case.csv and plots beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
