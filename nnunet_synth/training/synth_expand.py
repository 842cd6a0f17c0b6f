"""Training on an expanded dataset (``nnunet-synth expand``) with real-only validation.

At the start of training the trainer checks the split nnU-Net is about to
use against the rules of DESIGN.md, reading the expanded dataset's
``synthesis.json`` and ``expansion.json`` from its preprocessed folder. It
stops with a clear error if a generator was trained on the fold's validation
cases (unless the dataset was expanded with ``--allow-leakage``) or a case is
placed against the rules, also when splits_final.json was edited after
``nnunet-synth expand`` wrote it.

``synthetic_probability`` sets the chance that a training sample is synthetic
(``None`` keeps the natural ratio of the training set). The mix actually drawn
is counted from the batches and written to the log every epoch.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_synth.atomic import read_json
from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import EXPANSION_FILE, Manifest
from nnunet_synth.splits import check_expanded_folds, leaks_by_generator
from nnunet_synth.training.dataloaders import PluggableLoaderMixin
from nnunet_synth.training.loss_weights import FiniteLossWeightsMixin


def synthetic_sampling_probabilities(identifiers, synthetic: set[str], p: float | None) -> np.ndarray | None:
    """Per-identifier sampling probabilities giving synthetic samples total probability ``p``."""
    if p is None:
        return None
    if not 0.0 <= p <= 1.0:
        raise SynthError(f"synthetic_probability must be in [0, 1], got {p}")
    is_syn = np.array([i in synthetic for i in identifiers])
    n_syn, n_real = int(is_syn.sum()), int((~is_syn).sum())
    if (p > 0 and n_syn == 0) or (p < 1 and n_real == 0):
        raise SynthError(f"synthetic_probability={p} needs both kinds of cases, but the training set has "
                         f"{n_real} real and {n_syn} synthetic case(s)")
    probs = np.where(is_syn, p / max(n_syn, 1), (1 - p) / max(n_real, 1))
    return probs / probs.sum()


def check_training_fold(fold, dataset_name: str, train: list[str], val: list[str], manifest: Manifest,
                        expansion: dict) -> None:
    """Refuse a fold whose split breaks a rule of DESIGN.md, judged on the split nnU-Net is about to use.

    The split is judged again (not looked up in expansion.json's refused folds)
    because splits_final.json may have been edited since `nnunet-synth expand`
    wrote it; leakage is decided by the same function that expand used.
    """
    split = [{"train": train, "val": val}]
    if not expansion.get("allow_leakage"):
        leaks = leaks_by_generator(split, {gid: g.trained_on for gid, g in manifest.generators.items()})
        if leaks:
            seen = "; ".join(f"generator '{gid}' was trained on {', '.join(per_fold[0][:5])}"
                             for gid, per_fold in leaks.items())
            raise SynthError(f"fold {fold} of {dataset_name} was refused: its validation cases include cases a "
                             f"generator was trained on ({seen}; see {EXPANSION_FILE}); rerun `nnunet-synth "
                             f"expand` with --allow-leakage to train it anyway")
    problems = check_expanded_folds(split, expansion["real_cases"], manifest.sources())
    if problems:
        raise SynthError(f"fold {fold} of {dataset_name} breaks the split rules: "
                         + "; ".join(p.message for p in problems))


class SynthExpandTrainer(FiniteLossWeightsMixin, PluggableLoaderMixin, nnUNetTrainer):
    synthetic_probability: float | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._synthetic_cases: set[str] = set()
        self._mix_counts = {"real": 0, "synthetic": 0}

    # -- the split check -------------------------------------------------------------
    def _expansion_records(self) -> tuple[Manifest, dict]:
        base = self.preprocessed_dataset_folder_base
        expansion_path = os.path.join(base, EXPANSION_FILE)
        if not os.path.isfile(expansion_path):
            raise SynthError(f"{expansion_path}: missing; {self.__class__.__name__} trains on datasets built by "
                             f"`nnunet-synth expand` (use nnUNetTrainer for a plain dataset)")
        return Manifest.load(base), read_json(expansion_path)

    def do_split(self):
        tr_keys, val_keys = super().do_split()
        manifest, expansion = self._expansion_records()
        check_training_fold(self.fold, self.plans_manager.dataset_name, list(tr_keys), list(val_keys),
                            manifest, expansion)
        self._synthetic_cases = set(manifest.sources())
        n_syn = sum(k in self._synthetic_cases for k in tr_keys)
        self.print_to_log_file(f"split check passed: {len(tr_keys) - n_syn} real + {n_syn} synthetic training "
                               f"cases, {len(val_keys)} real validation cases")
        return tr_keys, val_keys

    # -- sampling ----------------------------------------------------------------------
    def make_train_loader(self, dataset_tr, initial_patch_size, transforms):
        loader = super().make_train_loader(dataset_tr, initial_patch_size, transforms)
        loader.sampling_probabilities = synthetic_sampling_probabilities(
            loader.indices, self._synthetic_cases, self.synthetic_probability)
        expected = "natural ratio" if self.synthetic_probability is None else f"p(synthetic)={self.synthetic_probability}"
        self.print_to_log_file(f"sampling: {expected}")
        return loader

    def train_step(self, batch: dict) -> dict:
        for key in batch["keys"]:
            self._mix_counts["synthetic" if key in self._synthetic_cases else "real"] += 1
        return super().train_step(batch)

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)
        total = sum(self._mix_counts.values())
        if total:
            self.print_to_log_file(f"samples drawn this epoch: {self._mix_counts['real']} real, "
                                   f"{self._mix_counts['synthetic']} synthetic "
                                   f"({100.0 * self._mix_counts['synthetic'] / total:.1f}% synthetic)")
        self._mix_counts = {"real": 0, "synthetic": 0}
