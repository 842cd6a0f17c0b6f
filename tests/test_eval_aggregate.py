"""Means over cases: nanmeans with their valid counts, NaN-safe foreground mean, empty counts (hand-computed)."""
import math

import pytest

from nnunet_synth.evaluation.aggregate import aggregate
from nnunet_synth.evaluation.metrics import COUNT_KEYS, MEAN_METRICS

NAN = float("nan")


def case(dice, hd95, empty_pred=False, empty_ref=False):
    metrics = {m: NAN for m in MEAN_METRICS + COUNT_KEYS}
    metrics.update(Dice=dice, HD95=hd95, TP=1.0, empty_pred=empty_pred, empty_ref=empty_ref)
    return metrics


def test_nanmean_valid_counts_and_empty_counts():
    per_case = [{"metrics": {1: case(0.8, 2.0), 2: case(NAN, NAN, empty_pred=True, empty_ref=True)}},
                {"metrics": {1: case(0.4, 6.0), 2: case(NAN, NAN, empty_pred=True, empty_ref=True)}},
                {"metrics": {1: case(NAN, NAN, empty_pred=True, empty_ref=True), 2: case(0.0, 9.0, empty_pred=True)}}]
    out = aggregate(per_case, [1, 2])
    assert out["n_cases"] == 3
    assert out["mean"][1]["Dice"] == pytest.approx(0.6) and out["n_valid"][1]["Dice"] == 2
    assert out["mean"][2]["HD95"] == pytest.approx(9.0) and out["n_valid"][2]["HD95"] == 1
    assert out["mean"][1]["TP"] == 1.0 and out["n_valid"][1]["TP"] == 3
    assert out["empty_counts"][1] == {"empty_pred": 1, "empty_ref": 1, "both_empty": 1}
    assert out["empty_counts"][2] == {"empty_pred": 3, "empty_ref": 2, "both_empty": 2}
    assert out["foreground_mean"]["Dice"] == pytest.approx((0.6 + 0.0) / 2)


def test_a_label_without_any_finite_value_is_nan_and_left_out_of_the_foreground_mean():
    per_case = [{"metrics": {1: case(0.5, 3.0), 2: case(NAN, NAN, empty_pred=True, empty_ref=True)}}]
    out = aggregate(per_case, [1, 2])
    assert math.isnan(out["mean"][2]["Dice"]) and out["n_valid"][2]["Dice"] == 0
    assert out["foreground_mean"]["Dice"] == pytest.approx(0.5)
    assert math.isnan(out["foreground_mean"]["Recall"])  # NaN for every label


def test_spread_beside_the_mean():
    import numpy as np

    dice = [0.9, 0.5, 0.7, 0.2, NAN]
    per_case = [{"metrics": {1: case(d, 1.0)}} for d in dice]
    spread = aggregate(per_case, [1])["spread"][1]["Dice"]
    finite = [0.9, 0.5, 0.7, 0.2]
    assert spread["sd"] == pytest.approx(np.std(finite, ddof=1))
    assert spread["median"] == pytest.approx(0.6)
    # numpy's default (linear) quartiles of 0.2, 0.5, 0.7, 0.9: 0.425 and 0.75
    assert (spread["q1"], spread["q3"]) == pytest.approx((0.425, 0.75))
    one = aggregate([{"metrics": {1: case(0.4, 1.0)}}], [1])["spread"][1]["Dice"]
    assert math.isnan(one["sd"]) and one["median"] == one["q1"] == one["q3"] == 0.4
