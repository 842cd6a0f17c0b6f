"""Patient-grouped cross-validation folds for converted datasets.

nnU-Net reads custom folds from ``$nnUNet_preprocessed/DatasetXXX_Name/splits_final.json``
(a list of ``{"train": [...], "val": [...]}``). Converters of datasets with
several images per patient write that file so that no patient is on both sides
of a fold, and keep a copy in the raw dataset folder, which travels with the
data and restores the file if the preprocessed folder is deleted.
"""
from __future__ import annotations

import numpy as np

from nnunet_synth.errors import SynthError


def grouped_kfold(case_ids, groups, n_folds: int = 5, seed: int = 12345) -> list[dict]:
    """Folds in which all cases of a group (patient) share one side: scikit-learn's ``GroupKFold``.

    ``GroupKFold`` places the groups largest first into the fold that holds the
    fewest cases so far, which keeps fold sizes close even when patients
    contribute very different numbers of images. Its ``shuffle=True`` mode is
    not used: it deals the groups out in equal numbers per fold, ignoring their
    sizes, and loses that balance. The seed still matters: groups are relabelled
    in a ``seed``-shuffled order first, and GroupKFold keeps that order among
    groups of equal size, so which of them share a fold is seeded and does not
    follow the patient ids (often the acquisition order). With fewer groups
    than ``n_folds``, there is one fold per group.
    """
    from sklearn.model_selection import GroupKFold

    case_ids = [str(c) for c in case_ids]
    groups = [str(g) for g in groups]
    if len(case_ids) != len(groups):
        raise ValueError("case_ids and groups must have the same length")
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("case ids must be unique")
    names = sorted(set(groups))
    if len(names) < 2:
        raise SynthError(f"cannot split {len(case_ids)} case(s) from {len(names)} patient(s) into folds; "
                         f"at least 2 patients are needed")
    shuffled = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    # GroupKFold sorts the labels, then stable-sorts them by size and walks the result from the end:
    # labelling in reverse shuffled order makes the walk visit equal-sized groups in shuffled order.
    label = {g: len(shuffled) - 1 - i for i, g in enumerate(shuffled)}
    splitter = GroupKFold(n_splits=min(n_folds, len(names)))
    folds = []
    for train, val in splitter.split(np.zeros(len(case_ids)), groups=[label[g] for g in groups]):
        folds.append({"train": sorted(case_ids[i] for i in train), "val": sorted(case_ids[i] for i in val)})
    return folds


def check_grouped(folds: list[dict], groups_by_case: dict[str, str]) -> None:
    """Raise ValueError if a group appears in both the training and validation set of a fold."""
    for i, fold in enumerate(folds):
        train_groups = {groups_by_case[c] for c in fold["train"]}
        both = sorted(train_groups & {groups_by_case[c] for c in fold["val"]})
        if both:
            raise ValueError(f"fold {i}: patient(s) {', '.join(both[:5])} on both sides")
