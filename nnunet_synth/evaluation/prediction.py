"""Trained nnU-Net models and their predictions of a test set.

A model is DATASET:TRAINER:PLANS:CONFIGURATION:FOLDS, where FOLDS is "0",
"0,1,2,3,4" or "all" (several folds are ensembled, as nnUNetv2_predict does);
its folder is $nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION.

Predictions are made by nnU-Net's predictor in this process, built once per
model (``ModelPredictor``) and used for every test set. Existing predictions
are reused; new ones are written case by case to a staging folder and renamed
once nnU-Net has written them, so a killed run never leaves a partial
prediction that a rerun would take for complete. A case nnU-Net cannot
predict (a corrupt image, say) stops the run with a one-line error naming it,
and its staging folder is removed. ``model.json`` beside the predictions
records which model and settings made them. nnU-Net's own output goes to a log
file, not to the terminal.

nnU-Net and torch are imported inside the functions, so
``nnunet-synth cross-eval --help`` does not load them.
"""
from __future__ import annotations

import os
import shutil
import traceback
from contextlib import ExitStack, nullcontext, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from nnunet_synth.atomic import TEMP_PREFIX, read_json, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.files import read_images
from nnunet_synth.evaluation.testsets import TestSet


@dataclass
class PredictionSettings:
    """How nnU-Net predicts: its -device, --disable_tta, -chk and -step_size."""

    device: str = "auto"
    use_mirroring: bool = True
    checkpoint: str = "checkpoint_final.pth"
    tile_step_size: float = 0.5

    def check(self) -> None:
        if not 0 < self.tile_step_size <= 1:
            raise SynthError(f"-step_size {self.tile_step_size}: use a value in (0, 1] (nnU-Net's default is 0.5)")
        if not self.checkpoint or "/" in self.checkpoint or not self.checkpoint.endswith(".pth"):
            raise SynthError(f"-chk {self.checkpoint}: expected a checkpoint file name of the fold folders, "
                             "e.g. checkpoint_final.pth or checkpoint_best.pth")


@dataclass
class ModelSpec:
    dataset: str
    trainer: str
    plans: str
    configuration: str
    folds: tuple

    @classmethod
    def parse(cls, text: str, name: str = "") -> "ModelSpec":
        parts = text.split(":")
        if len(parts) != 5 or not all(parts):
            raise SynthError(f"--model {name}={text}: expected DATASET:TRAINER:PLANS:CONFIGURATION:FOLDS, "
                             "e.g. 951:nnUNetTrainer:nnUNetPlans:2d:0")
        folds = parts[4].split(",")
        for f in folds:
            if f != "all" and not f.isdigit():
                raise SynthError(f"--model {name}={text}: fold '{f}' is neither a number nor 'all'")
        return cls(parts[0], parts[1], parts[2], parts[3], tuple(f if f == "all" else int(f) for f in folds))

    def folder(self) -> Path:
        from nnunetv2.utilities.file_path_utilities import get_output_folder

        try:
            return Path(get_output_folder(self.dataset, self.trainer, self.plans, self.configuration))
        except RuntimeError as e:  # nnU-Net's own "could not find a dataset with the ID" message
            raise SynthError(f"model dataset {self.dataset}: {e}") from None

    def describe(self) -> str:
        return (f"dataset {self.dataset}, trainer {self.trainer}, plans {self.plans}, "
                f"configuration {self.configuration}, folds {','.join(map(str, self.folds))}")

    def identity(self) -> dict:
        return {"dataset": str(self.dataset), "trainer": self.trainer, "plans": self.plans,
                "configuration": self.configuration, "folds": [str(f) for f in self.folds]}


def check_model(name: str, spec: ModelSpec, checkpoint: str = "checkpoint_final.pth") -> Path:
    """The model's folder, once dataset.json, plans.json and every fold's checkpoint are there."""
    folder = spec.folder()
    for fname in ("dataset.json", "plans.json"):
        if not (folder / fname).is_file():
            raise SynthError(f"model '{name}': {folder / fname} is missing; train it with nnUNetv2_train "
                             f"{spec.dataset} {spec.configuration} FOLD -tr {spec.trainer} -p {spec.plans}")
    for fold in spec.folds:
        path = folder / f"fold_{fold}" / checkpoint
        if not path.is_file():
            hint = f"finish training fold {fold} first" if checkpoint == "checkpoint_final.pth" else \
                "choose a checkpoint that exists with -chk"
            raise SynthError(f"model '{name}': {path} is missing; {hint}")
    return folder


def pick_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SynthError("--device cuda: no CUDA device is available; use --device cpu")
    return torch.device(device)


def staging_folder(out_folder: Path) -> Path:
    """Where nnU-Net writes before the rename; a temporary name, so nothing mistakes it for predictions."""
    return out_folder.parent / f"{TEMP_PREFIX}{out_folder.name}"


RECORD_DEFAULTS = {"checkpoint": "checkpoint_final.pth", "tile_step_size": 0.5}


class ModelPredictor:
    """nnU-Net's predictor for one model: built on first use, then kept for every test set.

    Whatever nnU-Net prints while building and predicting goes to ``log`` (an
    open text file); ``None`` leaves it on the terminal.
    """

    def __init__(self, name: str, spec: ModelSpec, model_folder: Path, settings: PredictionSettings, device,
                 log: TextIO | None = None):
        self.name, self.spec, self.model_folder, self.settings, self.device = name, spec, model_folder, settings, device
        self.log = log
        self._predictor = None
        self.builds = 0  # how often nnU-Net's predictor was built (once at most)

    def identity(self) -> dict:
        """What made a folder's predictions; recorded in model.json and compared on reuse."""
        return dict(self.spec.identity(), model_folder=str(self.model_folder),
                    use_mirroring=self.settings.use_mirroring, checkpoint=self.settings.checkpoint,
                    tile_step_size=self.settings.tile_step_size)

    def _quiet(self):
        if self.log is None:
            return nullcontext()
        stack = ExitStack()
        stack.enter_context(redirect_stdout(self.log))
        stack.enter_context(redirect_stderr(self.log))
        return stack

    def predictor(self):
        if self._predictor is None:
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

            with self._quiet():
                try:
                    predictor = self._build(nnUNetPredictor)
                except Exception as e:  # a corrupt or foreign checkpoint, a trainer class that is not found, ...
                    if self.log is not None:
                        traceback.print_exception(e, file=self.log)
                    first = (str(e).strip().splitlines() or [""])[0]
                    log = f"; details in {self.log.name}" if hasattr(self.log, "name") else ""
                    raise SynthError(f"model '{self.name}': nnU-Net could not load {self.model_folder} "
                                     f"({type(e).__name__}: {first}){log}") from None
            self._predictor, self.builds = predictor, self.builds + 1
        return self._predictor

    def _build(self, nnUNetPredictor):
        predictor = nnUNetPredictor(tile_step_size=self.settings.tile_step_size, use_gaussian=True,
                                    use_mirroring=self.settings.use_mirroring,
                                    perform_everything_on_device=self.device.type == "cuda",
                                    device=self.device, verbose=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(self.model_folder), use_folds=self.spec.folds,
                                                       checkpoint_name=self.settings.checkpoint)
        return predictor

    def _failed(self, test: TestSet, case: str, error: Exception) -> SynthError:
        if self.log is not None:
            traceback.print_exception(error, file=self.log)
            self.log.flush()
        where = f"model '{self.name}', test set '{test.name}': case '{case}'"
        reader_writer = getattr(getattr(self._predictor, "plans_manager", None), "image_reader_writer_class", None)
        if reader_writer is not None:
            read_images(reader_writer(), test.cases[case], where)  # raises the reader's one-line error, if it is that
        log = f"; details in {self.log.name}" if self.log is not None and hasattr(self.log, "name") else ""
        first = (str(error).strip().splitlines() or [""])[0]
        return SynthError(f"{where}: nnU-Net's predictor failed ({type(error).__name__}: {first}){log}")

    def predict_missing(self, test: TestSet, out_folder: Path,
                        on_case: Callable[[str], None] | None = None) -> int:
        """Predict the cases of ``test`` that have no prediction in ``out_folder`` yet; returns how many.

        ``on_case(case)`` is called after each case (for a progress bar).
        """
        record = out_folder / "model.json"
        identity = self.identity()
        # Records older than -chk and -step_size lack them: those predictions were made with nnU-Net's defaults.
        if record.is_file() and dict(RECORD_DEFAULTS, **read_json(record)) != identity:
            raise SynthError(f"{out_folder}: holds predictions of another model or setting ({record}); "
                             "delete the folder or choose another -o")
        todo = [c for c in test.cases if not (out_folder / f"{c}{test.file_ending}").is_file()]
        if not todo:
            return 0
        # nnU-Net writes straight to the final name; whatever a killed run left in staging is thrown away.
        staging = staging_folder(out_folder)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        try:
            predictor = self.predictor()
            for case in todo:
                try:
                    with self._quiet():
                        predictor.predict_from_files_sequential([test.cases[case]], [str(staging / case)],
                                                                save_probabilities=False, overwrite=True)
                except Exception as e:  # anything nnU-Net raises for one case becomes one line naming it
                    raise self._failed(test, case, e) from None
                produced = staging / f"{case}{test.file_ending}"
                if not produced.is_file():
                    raise SynthError(f"model '{self.name}', test set '{test.name}': nnU-Net wrote no prediction "
                                     f"for case '{case}'")
                if not record.is_file():
                    write_json_atomic(record, identity)  # before the first prediction lands beside it
                os.replace(produced, out_folder / produced.name)
                if on_case is not None:
                    on_case(case)
            for extra in ("dataset.json", "plans.json"):
                if (staging / extra).is_file():
                    os.replace(staging / extra, out_folder / extra)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return len(todo)
