"""The trainers stop on plans for which nnU-Net's deep-supervision weights are NaN (MIC-DKFZ/nnUNet#2670)."""
import copy
import importlib
import inspect
import json
import pkgutil
import warnings

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

import nnunet_synth_trainers
from nnunet_synth.errors import SynthError
from nnunet_synth.training.loss_weights import FiniteLossWeightsMixin, check_loss_weights


def test_every_trainer_of_the_package_checks_its_loss_weights():
    trainers = []
    for module in pkgutil.iter_modules(nnunet_synth_trainers.__path__):
        found = importlib.import_module(f"nnunet_synth_trainers.{module.name}")
        trainers += [c for _, c in inspect.getmembers(found, inspect.isclass)
                     if issubclass(c, nnUNetTrainer) and c.__module__ == found.__name__]
    assert len(trainers) >= 20
    assert [c.__name__ for c in trainers if not issubclass(c, FiniteLossWeightsMixin)] == []


@pytest.mark.parametrize("weights, refused", [(None, False), ((1.0,), False), ((0.57, 0.29, 0.14, 0.0), False),
                                              ((float("nan"),), True), ((0.5, float("inf")), True)])
def test_weights_that_are_not_finite_are_refused(weights, refused):
    if not refused:
        check_loss_weights(weights, "Dataset001_X 2d", 5, (64, 64))
        return
    with pytest.raises(SynthError, match=r"Dataset001_X 2d: .*2 stages \(patch size \[8, 8\]\).*nnUNet#2670"):
        check_loss_weights(weights, "Dataset001_X 2d", 2, (8, 8))


def two_stage(plans: dict) -> dict:
    """The plans' 2d network cut to its first two stages: one pooling, one deep-supervision output."""
    plans = copy.deepcopy(plans)
    arch = plans["configurations"]["2d"]["architecture"]["arch_kwargs"]
    for key in ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage"):
        arch[key] = arch[key][:2]
    arch["n_conv_per_stage_decoder"] = arch["n_conv_per_stage_decoder"][:1]
    arch["n_stages"] = 2
    return plans


@pytest.mark.parametrize("stages", [2, "planned"])
def test_nnunets_own_loss_of_two_stage_plans_is_refused_before_training(planned_tiny_2d, nnunet_folders, monkeypatch,
                                                                         stages):
    from nnunet_synth_trainers.nnUNetTrainerShort import nnUNetTrainerShort

    monkeypatch.setenv("nnUNet_preprocessed", str(planned_tiny_2d.preprocessed))  # read only; logs go to results
    base = planned_tiny_2d.preprocessed / "Dataset901_Tiny2D"
    plans = json.loads((base / "nnUNetPlans.json").read_text())
    plans = two_stage(plans) if stages == 2 else plans
    plans["continue_training"] = False
    trainer = nnUNetTrainerShort(plans, "2d", 0, json.loads((base / "dataset.json").read_text()),
                                 torch.device("cpu"))
    if stages == "planned":
        trainer.initialize()
        assert np.isfinite(trainer.loss.weight_factors).all() and len(trainer.loss.weight_factors) > 1
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nnU-Net's own 0 / 0
        with pytest.raises(SynthError, match=r"Dataset901_Tiny2D 2d: .*\[nan\].*2 stages"):
            trainer.initialize()
