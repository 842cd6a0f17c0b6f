"""Every model against the baseline, case by case, over all test sets and labels.

The tests and intervals are those of ``nnunet_synth.evaluation.stats``. One
Holm family is one (model, metric) pair: it holds that pair's comparisons on
every test set and label, because those are the questions a study asks
together ("does this model change Dice anywhere?").
"""
from __future__ import annotations

from nnunet_synth.evaluation.stats import add_holm, paired_compare

COMPARED_METRICS = ("Dice", "HD95", "ASSD")


def compare_with_baseline(values: dict, baseline: str, label_names: dict, n_resamples: int, confidence: float,
                          seed: int, alpha: float = 0.05) -> list[dict]:
    """Paired comparisons of every model with the baseline, as rows (``PairedResult.as_row`` plus Holm).

    ``values[test][model][label][case]`` holds a case's metric dict.
    """
    models = list(next(iter(values.values())))
    rows = []
    for other in (m for m in models if m != baseline):
        for metric in COMPARED_METRICS:
            family = []
            for t, per_model in values.items():
                for key, base_cases in per_model[baseline].items():
                    label = label_names[key]
                    result = paired_compare({c: v[metric] for c, v in base_cases.items()},
                                            {c: v[metric] for c, v in per_model[other][key].items()},
                                            n_resamples=n_resamples, confidence=confidence, seed=seed,
                                            alpha=alpha, what=f"{t}/{label}/{metric}/{baseline} vs {other}")
                    result.context = {"test_set": t, "label": label, "metric": metric, "baseline": baseline,
                                      "model": other}
                    family.append(result)
            add_holm(family)
            rows.extend(r.as_row() for r in family)
    return rows
