"""Patient-grouped cross-validation folds for converted datasets.

nnU-Net reads custom folds from ``$nnUNet_preprocessed/DatasetXXX_Name/splits_final.json``
(a list of ``{"train": [...], "val": [...]}``). Converters of datasets with
several images per patient write that file so that no patient is on both sides
of a fold, and keep a copy in the raw dataset folder, which travels with the
data and restores the file if the preprocessed folder is deleted.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from nnunet_synth.errors import SynthError


def grouped_kfold(case_ids, groups, n_folds: int = 5, seed: int = 12345) -> list[dict]:
    """Folds in which all cases of a group (patient) share one side.

    Groups are shuffled with ``seed``, then placed largest first into the fold
    that currently holds the fewest cases, which keeps fold sizes close even
    when patients contribute very different numbers of images. With fewer
    groups than ``n_folds``, there is one fold per group.
    """
    case_ids = [str(c) for c in case_ids]
    groups = [str(g) for g in groups]
    if len(case_ids) != len(groups):
        raise ValueError("case_ids and groups must have the same length")
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("case ids must be unique")
    members: dict[str, list[str]] = defaultdict(list)
    for case, group in zip(case_ids, groups):
        members[group].append(case)
    if len(members) < 2:
        raise SynthError(f"cannot split {len(case_ids)} case(s) from {len(members)} patient(s) into folds; "
                         f"at least 2 patients are needed")
    n_folds = min(n_folds, len(members))
    rng = np.random.default_rng(seed)
    order = [sorted(members)[i] for i in rng.permutation(len(members))]
    # A stable sort keeps the seeded order among groups of equal size.
    order.sort(key=lambda g: -len(members[g]))
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for group in order:
        smallest = min(range(n_folds), key=lambda f: (len(folds[f]), f))
        folds[smallest].extend(members[group])
    everything = sorted(case_ids)
    return [{"train": sorted(set(everything) - set(val)), "val": sorted(val)} for val in folds]


def check_grouped(folds: list[dict], groups_by_case: dict[str, str]) -> None:
    """Raise ValueError if a group appears in both the training and validation set of a fold."""
    for i, fold in enumerate(folds):
        train_groups = {groups_by_case[c] for c in fold["train"]}
        both = sorted(train_groups & {groups_by_case[c] for c in fold["val"]})
        if both:
            raise ValueError(f"fold {i}: patient(s) {', '.join(both[:5])} on both sides")
