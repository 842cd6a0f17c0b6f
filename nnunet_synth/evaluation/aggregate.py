"""Means over cases of the per-case metrics, in the layout of nnU-Net's summary.json.

Input: entries as in nnU-Net's ``metric_per_case`` (``{"metrics": {label: {metric: value}}}``).

- ``mean[label][metric]``: the mean over the cases whose value is finite (a
  nanmean, as nnU-Net takes); ``n_valid[label][metric]`` says how many that
  was. A label with no finite value has a NaN mean.
- ``spread[label][metric]``: ``sd`` (sample SD, ddof=1; NaN below 2 values),
  ``median``, ``q1`` and ``q3`` (the interquartile range) of the same finite
  values, so a mean is never read without its spread.
- ``foreground_mean[metric]``: the mean of the label means, over the labels
  whose mean is not NaN (nnU-Net's ``foreground_mean`` would be NaN then).
- ``empty_counts[label]``: how many cases have an empty prediction, an empty
  reference, and both.
"""
from __future__ import annotations

import math

import numpy as np

from nnunet_synth.evaluation.metrics import COUNT_KEYS, FLAG_KEYS, MEAN_METRICS


def aggregate(per_case: list[dict], labels_or_regions: list) -> dict:
    """``mean``, ``spread``, ``foreground_mean``, ``n_valid``, ``empty_counts`` and ``n_cases`` (see the module docstring)."""
    mean, spread, n_valid, flags = {}, {}, {}, {}
    nan = float("nan")
    for r in labels_or_regions:
        mean[r], spread[r], n_valid[r] = {}, {}, {}
        for m in MEAN_METRICS + COUNT_KEYS:
            values = np.array([c["metrics"][r][m] for c in per_case], dtype=np.float64)
            finite = values[np.isfinite(values)]
            n_valid[r][m] = int(len(finite))
            mean[r][m] = float(np.mean(finite)) if len(finite) else nan
            q1, median, q3 = (float(q) for q in np.percentile(finite, [25, 50, 75])) if len(finite) else (nan,) * 3
            spread[r][m] = {"sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else nan, "median": median,
                            "q1": q1, "q3": q3}
        flags[r] = {f: int(sum(bool(c["metrics"][r][f]) for c in per_case)) for f in FLAG_KEYS}
        flags[r]["both_empty"] = int(sum(c["metrics"][r]["empty_pred"] and c["metrics"][r]["empty_ref"]
                                         for c in per_case))
    foreground_mean = {}
    for m in MEAN_METRICS + COUNT_KEYS:
        label_means = [mean[r][m] for r in labels_or_regions if not math.isnan(mean[r][m])]
        foreground_mean[m] = float(np.mean(label_means)) if label_means else float("nan")
    return {"mean": mean, "spread": spread, "foreground_mean": foreground_mean, "n_valid": n_valid, "empty_counts": flags,
            "n_cases": len(per_case)}
