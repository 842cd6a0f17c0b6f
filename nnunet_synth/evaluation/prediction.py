"""Trained nnU-Net models and their predictions of a test set.

A model is DATASET:TRAINER:PLANS:CONFIGURATION:FOLDS, where FOLDS is "0",
"0,1,2,3,4" or "all" (several folds are ensembled, as nnUNetv2_predict does);
its folder is $nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION.

Predictions are made by nnU-Net's predictor in this process. Existing ones are
reused; new ones are written to a staging folder and renamed once the
predictor has finished, so a killed run never leaves a partial prediction that
a rerun would take for complete. ``model.json`` beside the predictions records
which model and settings made them.

nnU-Net and torch are imported inside the functions, so
``nnunet-synth cross-eval --help`` does not load them.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from nnunet_synth.atomic import TEMP_PREFIX, read_json, write_json_atomic
from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.testsets import TestSet


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


def check_model(name: str, spec: ModelSpec) -> Path:
    """The model's folder, once dataset.json, plans.json and every fold's final checkpoint are there."""
    folder = spec.folder()
    for fname in ("dataset.json", "plans.json"):
        if not (folder / fname).is_file():
            raise SynthError(f"model '{name}': {folder / fname} is missing; train it with nnUNetv2_train "
                             f"{spec.dataset} {spec.configuration} FOLD -tr {spec.trainer} -p {spec.plans}")
    for fold in spec.folds:
        checkpoint = folder / f"fold_{fold}" / "checkpoint_final.pth"
        if not checkpoint.is_file():
            raise SynthError(f"model '{name}': {checkpoint} is missing; finish training fold {fold} first")
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


def predict_missing(name: str, spec: ModelSpec, model_folder: Path, test: TestSet, out_folder: Path,
                    device, use_mirroring: bool) -> int:
    """Predict the cases of ``test`` that have no prediction in ``out_folder`` yet; returns how many."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    out_folder.mkdir(parents=True, exist_ok=True)
    record = out_folder / "model.json"
    identity = dict(spec.identity(), model_folder=str(model_folder), use_mirroring=use_mirroring)
    if record.is_file() and read_json(record) != identity:
        raise SynthError(f"{out_folder}: holds predictions of another model or setting ({record}); "
                         "delete the folder or choose another -o")
    todo = [c for c in test.cases if not (out_folder / f"{c}{test.file_ending}").is_file()]
    if not todo:
        return 0
    write_json_atomic(record, identity)
    # nnU-Net writes straight to the final name; whatever a killed run left in staging is thrown away.
    staging = staging_folder(out_folder)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=device.type == "cuda", device=device,
                                verbose=False, allow_tqdm=True)
    predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=spec.folds)
    predictor.predict_from_files_sequential([test.cases[c] for c in todo], [str(staging / c) for c in todo],
                                            save_probabilities=False, overwrite=True)
    for c in todo:
        produced = staging / f"{c}{test.file_ending}"
        if not produced.is_file():
            raise SynthError(f"model '{name}', test set '{test.name}': nnU-Net wrote no prediction for case '{c}'")
        os.replace(produced, out_folder / produced.name)
    for extra in ("dataset.json", "plans.json"):
        if (staging / extra).is_file():
            os.replace(staging / extra, out_folder / extra)
    shutil.rmtree(staging)
    return len(todo)
