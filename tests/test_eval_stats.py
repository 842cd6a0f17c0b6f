"""Paired statistics against scipy.stats run directly, Holm's correction, and case matching."""
import math

import numpy as np
import pytest
from scipy import stats

from nnunet_synth.errors import SynthError
from nnunet_synth.evaluation.stats import add_holm, holm, join_by_case, paired_compare


@pytest.fixture
def paired_sample():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.5, 0.8, size=25)
    other = np.clip(base + rng.normal(0.04, 0.05, size=25), 0, 1)
    cases = [f"case_{i:03d}" for i in range(25)]
    return dict(zip(cases, base)), dict(zip(reversed(cases), other[::-1])), base, other


def test_tests_match_scipy_directly(paired_sample):
    base_map, other_map, base, other = paired_sample
    r = paired_compare(base_map, other_map, n_resamples=2000, seed=1)
    assert r.n == 25 and r.n_dropped == 0
    assert r.wilcoxon_p == pytest.approx(stats.wilcoxon(other, base).pvalue, rel=1e-12)
    assert r.wilcoxon_statistic == pytest.approx(stats.wilcoxon(other, base).statistic)
    assert r.ttest_p == pytest.approx(stats.ttest_rel(other, base).pvalue, rel=1e-12)
    assert r.mean_diff == pytest.approx(np.mean(other - base))
    assert r.median_diff == pytest.approx(np.median(other - base))
    expected = stats.bootstrap((other - base,), np.mean, n_resamples=2000, method="percentile",
                               rng=np.random.default_rng(1)).confidence_interval
    assert r.mean_diff_ci == pytest.approx((expected.low, expected.high))
    assert r.mean_diff_ci[0] < r.mean_diff < r.mean_diff_ci[1]
    assert r.median_diff_ci[0] <= r.median_diff <= r.median_diff_ci[1]
    # Same seed, same numbers.
    assert paired_compare(base_map, other_map, n_resamples=2000, seed=1).mean_diff_ci == r.mean_diff_ci


def test_nan_pairs_are_dropped_and_counted(paired_sample):
    base_map, other_map, base, other = paired_sample
    base_map = dict(base_map, case_000=float("nan"))
    r = paired_compare(base_map, other_map, n_resamples=200)
    assert r.n == 24 and r.n_dropped == 1
    assert r.wilcoxon_p == pytest.approx(stats.wilcoxon(other[1:], base[1:]).pvalue)


def test_degenerate_samples_give_nan_with_a_reason():
    same = {"a": 0.5, "b": 0.7, "c": 0.9}
    r = paired_compare(same, dict(same))
    assert math.isnan(r.wilcoxon_p) and "zero" in r.note and r.mean_diff_ci == (0.0, 0.0)
    one = paired_compare({"a": 0.1}, {"a": 0.3})
    assert math.isnan(one.ttest_p) and "1 valid pair" in one.note


def test_mismatched_case_sets_are_refused_by_name():
    with pytest.raises(SynthError, match=r"TDID/lesion/Dice: .*only the baseline has case\(s\) c; only the other model has case\(s\) d"):
        paired_compare({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "d": 3}, what="TDID/lesion/Dice")
    cases, a, b = join_by_case({"b": 2, "a": 1}, {"a": 10, "b": 20})
    assert cases == ["a", "b"] and a.tolist() == [1, 2] and b.tolist() == [10, 20]


def test_holm_by_hand():
    # sorted p: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.5 (x1 = 0.5)
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    # step-down keeps adjusted values monotone, caps at 1, and skips NaN
    adjusted = holm([0.04, float("nan"), 0.045, 0.9])
    assert adjusted[0] == pytest.approx(0.12) and adjusted[2] == pytest.approx(0.12) and adjusted[3] == 0.9
    assert math.isnan(adjusted[1])
    assert holm([0.6, 0.7]) == [1.0, 1.0]


def test_add_holm_writes_adjusted_values(paired_sample):
    base_map, other_map, _, _ = paired_sample
    results = [paired_compare(base_map, other_map, n_resamples=100), paired_compare(base_map, base_map, n_resamples=100)]
    add_holm(results)
    assert results[0].context["wilcoxon_p_holm"] == pytest.approx(results[0].wilcoxon_p)  # family of one valid p
    assert math.isnan(results[1].context["wilcoxon_p_holm"])
    row = results[0].as_row()
    assert {"wilcoxon_p", "wilcoxon_p_holm", "mean_diff_ci_low", "median_diff_ci_high"} <= set(row)
