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
    expected = stats.bootstrap((other - base,), np.mean, n_resamples=2000, method="BCa",
                               rng=np.random.default_rng(1)).confidence_interval
    assert r.mean_diff_ci == pytest.approx((expected.low, expected.high))
    percentile = stats.bootstrap((other - base,), np.mean, n_resamples=2000, method="percentile",
                                 rng=np.random.default_rng(1)).confidence_interval
    assert r.mean_diff_ci != pytest.approx((percentile.low, percentile.high), abs=1e-9)  # BCa, not percentile
    assert r.diff_sd == pytest.approx(np.std(other - base, ddof=1))
    assert (r.diff_q1, r.diff_q3) == pytest.approx(tuple(np.percentile(other - base, [25, 75])))
    assert r.wilcoxon_min_p == pytest.approx(2 / 2 ** 25) and "n too small" not in r.note
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


@pytest.mark.parametrize("n", [3, 4, 5, 6, 8])
def test_min_attainable_p_is_the_exact_wilcoxon_bound_and_small_n_is_flagged(n):
    base = {f"c{i}": 0.5 for i in range(n)}
    other = {f"c{i}": 0.5 + 0.01 * (i + 1) for i in range(n)}  # every case better, no ties: the extreme outcome
    r = paired_compare(base, other, n_resamples=200)
    assert r.wilcoxon_min_p == pytest.approx(2 / 2 ** n)
    assert r.wilcoxon_p == pytest.approx(r.wilcoxon_min_p)  # this data is the extreme outcome
    flagged = "n too small" in r.note
    assert flagged == (2 / 2 ** n > 0.05)  # n <= 5 can never give p < 0.05
    if n == 4:
        assert "smallest possible p 0.125" in r.note
    assert ("n too small" in paired_compare(base, other, n_resamples=200, alpha=0.2).note) == (2 / 2 ** n > 0.2)


def test_min_attainable_p_follows_the_method_scipy_uses_with_ties_and_zeros():
    from nnunet_synth.evaluation.stats import min_wilcoxon_p

    diff = np.array([0.0, 0.1, 0.1, -0.2, 0.3, 0.3, 0.05])  # a zero and ties: scipy does not use the exact table
    expected = stats.wilcoxon(np.abs(diff)).pvalue
    assert min_wilcoxon_p(diff) == pytest.approx(expected)
    assert min_wilcoxon_p(diff) != pytest.approx(2 / 2 ** len(diff))
    # no sign pattern of these differences gives a smaller p
    rng = np.random.default_rng(0)
    for _ in range(8):  # each call is a permutation test (ties and a zero): a few sign patterns are enough
        signs = rng.choice([-1.0, 1.0], size=len(diff))
        assert stats.wilcoxon(diff * signs).pvalue >= min_wilcoxon_p(diff) - 1e-12


def test_bca_interval_undefined_is_nan_with_a_note():
    base = {c: 0.5 for c in "abcd"}
    other = {"a": 0.6, "b": 0.6, "c": 0.6, "d": 0.7}  # median of resamples almost always 0.1: BCa is 0/0
    r = paired_compare(base, other, n_resamples=500)
    assert all(math.isnan(v) for v in r.median_diff_ci)
    assert "BCa interval of the median difference undefined" in r.note
    assert all(math.isfinite(v) for v in r.mean_diff_ci)


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(11)
    for size in (1, 2, 5, 12):
        p = rng.uniform(0, 0.2, size=size)
        p[rng.integers(size)] = rng.uniform(0.5, 1)
        assert holm(p) == pytest.approx(multipletests(p, method="holm")[1], rel=1e-12)
    tied = [0.01, 0.01, 0.04, 0.04, 0.3]
    assert holm(tied) == pytest.approx(multipletests(tied, method="holm")[1])
    # NaN (a test that could not be run) is left out of the family; statsmodels is given the others only.
    with_nan = [0.02, float("nan"), 0.01, 0.2]
    finite = [0.02, 0.01, 0.2]
    adjusted = holm(with_nan)
    assert math.isnan(adjusted[1])
    assert [adjusted[0], adjusted[2], adjusted[3]] == pytest.approx(multipletests(finite, method="holm")[1])
