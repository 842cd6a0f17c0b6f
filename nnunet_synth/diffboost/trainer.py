"""The DiffBoost trainer: nnUNetTrainer whose training samples are patch-mixed with synthetic twins.

Settings are class attributes, so a variant is a two-line subclass
(see trainers/nnUNetTrainerDiffBoost.py and docs/diffboost.md):

- ``alpha``: probability that a mask cell keeps the real sample (DiffBoost: 0.6);
- ``patch_edge``: mask cell edge in voxels, an int or one per axis; None is
  one sixth of the patch size per axis (DiffBoost: 64 px at 384 px);
- ``mix_mode``: ``"output"`` (published code: forward real and twin, mix the
  logits at every deep-supervision scale) or ``"input"`` (paper text: mix the
  images, one forward pass);
- ``twins_per_case``: use the first K twins of each case (None: all), one
  chosen uniformly at random per sample;
- ``synchronize_intensity``: same intensity augmentation for real and twin;
- ``allow_generator_leakage``: train even if the generator saw this fold's
  validation cases (refused by default).

Validation and inference are nnUNetTrainer's, on real cases only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

from nnunet_synth.atomic import atomic_path, write_json_atomic
from nnunet_synth.diffboost.loader import DiffBoostDataLoader
from nnunet_synth.diffboost.mask import PatchMixMaskTransform, resolve_patch_edge
from nnunet_synth.diffboost.store import TwinManifest, TwinStore, plans_fingerprint, refuse_cascaded, twin_folder
from nnunet_synth.diffboost.transforms import twin_pipeline
from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import TWINS_FILE, file_hash
from nnunet_synth.splits import leaked_folds
from nnunet_synth.training.dataloaders import PluggableLoaderMixin
from nnunet_synth.training.loss_weights import FiniteLossWeightsMixin

MIX_MODES = ("output", "input")
RECORD_FILE = "diffboost.json"


def mix_outputs(output, mask: torch.Tensor):
    """Keep the real half of ``output`` where ``mask`` is True and the twin half elsewhere.

    ``output`` is a (2B, K, ...) tensor or a list of them (deep supervision);
    ``mask`` is (B, 1, *patch), brought to each output's size with the same
    nearest-neighbour rule nnU-Net uses to downsample the targets.
    """
    if isinstance(output, (list, tuple)):
        return [mix_outputs(o, mask) for o in output]
    b = mask.shape[0]
    real, twin = output[:b], output[b:]
    if real.shape[0] != twin.shape[0]:
        raise ValueError(f"output batch {output.shape[0]} is not twice the mask batch {b}")
    if mask.shape[2:] != real.shape[2:]:
        mask = F.interpolate(mask.float(), size=real.shape[2:], mode="nearest-exact") > 0.5
    return torch.where(mask, real, twin)


class OutputMixLoss(nn.Module):
    """nnU-Net's loss on mixed logits while ``mask`` is set, the plain loss otherwise (validation)."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss
        self.mask: torch.Tensor | None = None

    def forward(self, output, target):
        if self.mask is None:
            return self.loss(output, target)
        return self.loss(mix_outputs(output, self.mask), target)


class DiffBoostTrainer(FiniteLossWeightsMixin, PluggableLoaderMixin, nnUNetTrainer):
    alpha: float = 0.6
    patch_edge: int | tuple[int, ...] | None = None
    mix_mode: str = "output"
    twins_per_case: int | None = None
    synchronize_intensity: bool = False
    allow_generator_leakage: bool = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        name = type(self).__name__
        refuse_cascaded(self.configuration_manager, configuration, name)
        if self.mix_mode not in MIX_MODES:
            raise SynthError(f"{name}.mix_mode is {self.mix_mode!r}; expected one of {MIX_MODES}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise SynthError(f"{name}.alpha is {self.alpha}; expected a value in [0, 1]")
        try:
            self.mix_patch_edge = resolve_patch_edge(self.patch_edge, self.configuration_manager.patch_size)
        except ValueError as e:
            raise SynthError(f"{name}: {e}") from None
        self.twin_manifest: TwinManifest | None = None
        self.twins: TwinStore | None = None

    # -- settings, recorded in the output folder and in checkpoints ---------------------
    def diffboost_settings(self) -> dict:
        return {
            "alpha": float(self.alpha),
            "patch_edge": list(self.mix_patch_edge),
            "mix_mode": self.mix_mode,
            "twins_per_case": self.twins_per_case,
            "synchronize_intensity": bool(self.synchronize_intensity),
            "allow_generator_leakage": bool(self.allow_generator_leakage),
        }

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        if self.local_rank != 0 or self.disable_checkpointing or not os.path.isfile(filename):
            return
        # nnUNetTrainer builds the checkpoint inside save_checkpoint; add the settings to what it wrote.
        checkpoint = torch.load(filename, map_location="cpu", weights_only=False)
        checkpoint["diffboost"] = self.diffboost_settings()
        with atomic_path(filename) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        checkpoint = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False)
        where = filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else "checkpoint"
        saved = checkpoint.get("diffboost")
        if saved is None:
            raise SynthError(f"{where}: has no DiffBoost settings (written by {checkpoint.get('trainer_name')}); "
                             f"resume with the trainer that wrote it")
        if saved != self.diffboost_settings():
            raise SynthError(f"{where}: written with DiffBoost settings {json.dumps(saved)}, but "
                             f"{type(self).__name__} has {json.dumps(self.diffboost_settings())}; "
                             f"resume with the same trainer")
        super().load_checkpoint(filename_or_checkpoint)

    # -- twins and their guards ---------------------------------------------------------
    def open_twins(self, train_keys, val_keys) -> TwinStore:
        """The twins of the training cases, after every check that must pass before training."""
        folder = twin_folder(self.preprocessed_dataset_folder)
        tm = TwinManifest.load(folder)
        rerun = (f"rerun nnunet-synth twins -d {self.plans_manager.dataset_name} -s {tm.synthetic_dataset} "
                 f"-c {self.configuration_name} -p {self.plans_manager.plans_name}")
        if (tm.configuration != self.configuration_name
                or tm.plans_fingerprint != plans_fingerprint(self.plans_manager, self.configuration_manager)):
            raise SynthError(f"{folder / TWINS_FILE}: twins were preprocessed with other plans "
                             f"({tm.plans_identifier}, configuration {tm.configuration}) than this training "
                             f"({self.plans_manager.plans_name}, {self.configuration_name}); {rerun}")
        manifest = tm.load_synthesis(folder, rerun)

        if self.fold != "all":
            leaked = leaked_folds([{"train": list(train_keys), "val": list(val_keys)}], manifest.trained_on())
            if leaked:
                cases = ", ".join(leaked[0][:5])
                if not self.allow_generator_leakage:
                    raise SynthError(f"fold {self.fold}: the generator of {tm.synthetic_dataset} was trained on "
                                     f"{len(leaked[0])} validation case(s) of this fold ({cases}); train a generator "
                                     f"without them, or subclass with allow_generator_leakage = True")
                self.print_to_log_file(f"WARNING: generator trained on validation case(s) {cases} (allowed)")

        missing = sorted(set(train_keys) - set(tm.twins) - set(tm.real_only))
        if missing:
            raise SynthError(f"{folder / TWINS_FILE}: no twins for training case(s) {', '.join(missing[:5])}; {rerun}")
        store = TwinStore(folder, {k: tm.twins.get(k, []) for k in train_keys}, self.twins_per_case)
        store.check_against(self.preprocessed_dataset_folder, train_keys)
        self.twin_manifest = tm
        if self.local_rank == 0:
            write_json_atomic(Path(self.output_folder) / RECORD_FILE, {
                "settings": self.diffboost_settings(),
                "twin_manifest": str(folder / TWINS_FILE),
                "twin_manifest_hash": file_hash(folder / TWINS_FILE),
                "synthetic_dataset": tm.synthetic_dataset,
                "synthesis_manifest_hash": tm.synthesis_manifest_hash,
                "real_only_cases": sorted(set(train_keys) & set(tm.real_only)),
            })
        return store

    # -- data (nnU-Net's get_dataloaders, via PluggableLoaderMixin) ----------------------
    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        self.twins = self.open_twins(dataset_tr.identifiers, dataset_val.identifiers)
        return dataset_tr, dataset_val

    def make_train_loader(self, dataset_tr, initial_patch_size, transforms):
        transforms = twin_pipeline(transforms, self.synchronize_intensity,
                                   [PatchMixMaskTransform(self.alpha, self.mix_patch_edge)])
        return DiffBoostDataLoader(dataset_tr, self.batch_size, initial_patch_size,
                                   self.configuration_manager.patch_size, self.label_manager, self.twins, transforms,
                                   oversample_foreground_percent=self.oversample_foreground_percent,
                                   probabilistic_oversampling=self.probabilistic_oversampling)

    # -- mixing -----------------------------------------------------------------------------
    def _build_loss(self):
        loss = super()._build_loss()
        return OutputMixLoss(loss) if self.mix_mode == "output" else loss

    def train_step(self, batch: dict) -> dict:
        mask = batch["mix_mask"]
        if self.mix_mode == "input":
            return super().train_step({**batch, "data": torch.where(mask, batch["data"], batch["twin"])})
        self.loss.mask = mask.to(self.device, non_blocking=True)
        try:
            return super().train_step({**batch, "data": torch.cat((batch["data"], batch["twin"]))})
        finally:
            self.loss.mask = None
