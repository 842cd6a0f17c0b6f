"""Paired comparisons of two models on the same cases.

For one test set, label and metric, the per-case values of a baseline and of
another model are joined by case id (different case sets are an error: a paired
test on unmatched cases would compare different things). Cases where either
value is NaN (both masks empty) are left out and counted in ``n_dropped``.

Reported, with difference = other - baseline (so for Dice a positive
difference is a gain, for HD95 and ASSD a negative one):

- ``wilcoxon_p``: Wilcoxon signed-rank test, two-sided (the primary test),
  ``scipy.stats.wilcoxon`` with its defaults;
- ``ttest_p``: paired t-test, ``scipy.stats.ttest_rel``;
- ``median_diff`` and ``mean_diff`` with BCa confidence intervals from a
  paired bootstrap (cases resampled with replacement, both models together),
  ``scipy.stats.bootstrap(method="BCa")`` with a fixed seed, so reruns give the
  same numbers; where BCa is undefined (too few distinct differences, e.g. the
  median of 4 pairs with ties) the interval is NaN and ``note`` says so;
- ``diff_sd`` (sample SD, ddof=1), ``diff_q1`` / ``diff_q3`` (the IQR) of the
  differences, beside their mean and median;
- ``wilcoxon_min_p``: the smallest p-value the Wilcoxon test could give with
  these n pairs, whatever their signs: the same scipy call on the absolute
  differences (every sign the same), so it follows the method scipy picks
  (exact without ties: 2/2^n two-sided, i.e. 0.125 for n = 4). When it is
  above ``alpha``, ``note`` warns that the test cannot reach the significance
  level at all: a non-significant result then says nothing about the models;
- ``wilcoxon_p_holm`` / ``ttest_p_holm``: Holm's step-down correction over the
  whole family passed to ``holm`` (cross-eval uses all test sets and labels of
  one metric and one model pair).

A test that cannot be computed (fewer than two pairs, or every difference zero)
gives p = NaN and says why in ``note``; NaN p-values are left out of the Holm
family.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from nnunet_synth.errors import SynthError


@dataclass
class PairedResult:
    n: int
    n_dropped: int
    baseline_mean: float
    other_mean: float
    mean_diff: float
    mean_diff_ci: tuple[float, float]
    median_diff: float
    median_diff_ci: tuple[float, float]
    diff_sd: float
    diff_q1: float
    diff_q3: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    wilcoxon_min_p: float
    ttest_statistic: float
    ttest_p: float
    alpha: float = 0.05
    note: str = ""
    context: dict = field(default_factory=dict)

    def as_row(self) -> dict:
        row = dict(self.context)
        row.update({k: v for k, v in asdict(self).items() if k not in ("context", "mean_diff_ci", "median_diff_ci")})
        row["mean_diff_ci_low"], row["mean_diff_ci_high"] = self.mean_diff_ci
        row["median_diff_ci_low"], row["median_diff_ci_high"] = self.median_diff_ci
        return row


def join_by_case(baseline: Mapping[str, float], other: Mapping[str, float],
                 what: str = "") -> tuple[list[str], np.ndarray, np.ndarray]:
    """The two models' values on the same cases, in sorted case order; refuses different case sets."""
    only_base, only_other = sorted(set(baseline) - set(other)), sorted(set(other) - set(baseline))
    if only_base or only_other:
        parts = []
        if only_base:
            parts.append(f"only the baseline has case(s) {', '.join(only_base)}")
        if only_other:
            parts.append(f"only the other model has case(s) {', '.join(only_other)}")
        raise SynthError(f"{what + ': ' if what else ''}the models do not cover the same cases ({'; '.join(parts)})")
    cases = sorted(baseline)
    return cases, np.array([baseline[c] for c in cases], float), np.array([other[c] for c in cases], float)


def _bootstrap_ci(diff: np.ndarray, statistic, n_resamples: int, confidence: float, seed: int,
                  notes: list[str], name: str) -> tuple[float, float]:
    """BCa interval of ``statistic`` over paired differences; NaN (and a note) where BCa is undefined."""
    from scipy import stats

    nan = float("nan")
    if len(diff) == 0:
        return nan, nan
    if len(diff) < 2 or np.all(diff == diff[0]):
        # Every resample gives the same value: the interval is that value (scipy would warn and give NaN).
        value = float(statistic(diff))
        return value, value
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = stats.bootstrap((diff,), statistic, n_resamples=n_resamples, confidence_level=confidence,
                              method="BCa", vectorized=True, rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        # scipy's DegenerateDataWarning: the jackknife acceleration is 0/0 (too few distinct values).
        notes.append(f"BCa interval of the {name} undefined ({len(np.unique(diff))} distinct differences)")
        return nan, nan
    for w in caught:  # any other warning of the bootstrap is the reader's business too
        if "BCa" in str(w.message):
            notes.append(f"{name} interval: {str(w.message).splitlines()[0]}")
    return low, high


def min_wilcoxon_p(diff: np.ndarray) -> float:
    """The smallest two-sided p ``scipy.stats.wilcoxon`` can give for differences of these sizes (any signs).

    Every sign the same is the most extreme outcome, so it is the test itself on
    ``|diff|``: same n, zeros and ties, hence the same method (exact, permutation
    or normal approximation) as the real call. Exact without ties: 2 / 2**n.
    """
    from scipy import stats

    diff = np.asarray(diff, float)
    if not np.any(diff != 0):
        return float("nan")
    return float(stats.wilcoxon(np.abs(diff)).pvalue)


def paired_compare(baseline: Mapping[str, float], other: Mapping[str, float], n_resamples: int = 10000,
                   confidence: float = 0.95, seed: int = 0, what: str = "", alpha: float = 0.05) -> PairedResult:
    """Paired tests and bootstrap intervals for per-case values keyed by case id."""
    from scipy import stats

    _, a, b = join_by_case(baseline, other, what)
    valid = np.isfinite(a) & np.isfinite(b)
    a, b = a[valid], b[valid]
    diff = b - a
    notes = []
    w_stat = w_p = t_stat = t_p = min_p = float("nan")
    if len(diff) < 2:
        notes.append(f"{len(diff)} valid pair(s): no test")
    elif np.all(diff == 0):
        notes.append("all differences are zero: no test")
    else:
        w = stats.wilcoxon(b, a)
        w_stat, w_p = float(w.statistic), float(w.pvalue)
        t = stats.ttest_rel(b, a)
        t_stat, t_p = float(t.statistic), float(t.pvalue)
        min_p = min_wilcoxon_p(diff)
        if min_p > alpha:
            notes.append(f"n too small: with {len(diff)} pairs Wilcoxon cannot reach p < {alpha:g} "
                         f"(smallest possible p {min_p:.3g})")
    median = lambda x, axis=-1: np.median(x, axis=axis)  # noqa: E731 (vectorized statistic for bootstrap)
    mean = lambda x, axis=-1: np.mean(x, axis=axis)  # noqa: E731
    nan = float("nan")
    q1, q3 = (float(q) for q in np.percentile(diff, [25, 75])) if len(diff) else (nan, nan)
    return PairedResult(
        n=int(len(diff)), n_dropped=int((~valid).sum()),
        baseline_mean=float(a.mean()) if len(a) else nan, other_mean=float(b.mean()) if len(b) else nan,
        mean_diff=float(diff.mean()) if len(diff) else nan,
        mean_diff_ci=_bootstrap_ci(diff, mean, n_resamples, confidence, seed, notes, "mean difference"),
        median_diff=float(np.median(diff)) if len(diff) else nan,
        median_diff_ci=_bootstrap_ci(diff, median, n_resamples, confidence, seed, notes, "median difference"),
        diff_sd=float(np.std(diff, ddof=1)) if len(diff) > 1 else nan, diff_q1=q1, diff_q3=q3,
        wilcoxon_statistic=w_stat, wilcoxon_p=w_p, wilcoxon_min_p=min_p, ttest_statistic=t_stat, ttest_p=t_p,
        alpha=alpha, note="; ".join(notes))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order; NaN stays NaN and is not counted.

    scipy has only Benjamini-Hochberg (``false_discovery_control``), hence these lines.
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))  # step-down: adjusted values never decrease
        adjusted[i] = running
    return [float(v) for v in adjusted]


def add_holm(results: list[PairedResult]) -> None:
    """Holm-correct the Wilcoxon and t-test p-values of one family in place (into ``context``)."""
    for key in ("wilcoxon_p", "ttest_p"):
        for r, adj in zip(results, holm([getattr(r, key) for r in results])):
            r.context[f"{key}_holm"] = adj
