"""The synthetic share of the samples nnUNetTrainerSynthExpand's variants draw (issue 17)."""
from types import SimpleNamespace

import numpy as np
import pytest
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from scipy.stats import binomtest

from nnunet_synth.environment import trainer_folder
from nnunet_synth.errors import SynthError
from nnunet_synth.training.synth_expand import synthetic_sampling_probabilities

# 10 real and 20 synthetic cases: the natural ratio (2/3) is none of the variants' probabilities,
# so a trainer that ignored its probability would fail every case below.
REAL = [f"case_{i:03d}" for i in range(10)]
SYNTHETIC = [f"{c}_syn{k:03d}" for c in REAL for k in range(2)]
DRAWS = 20_000


def loader_draws(p: float | None, seed: int = 0) -> np.ndarray:
    """Case ids drawn by nnU-Net's own training loader, with the probabilities the trainer gives it."""
    data = SimpleNamespace(identifiers=sorted(REAL + SYNTHETIC))
    loader = nnUNetDataLoader(data, 50, (16, 16), (16, 16), LabelManager({"background": 0, "lesion": 1}, None))
    # make_train_loader sets the attribute after nnU-Net built the loader, in the same way
    loader.sampling_probabilities = synthetic_sampling_probabilities(loader.indices, set(SYNTHETIC), p)
    np.random.seed(seed)
    return np.concatenate([loader.get_indices() for _ in range(DRAWS // 50)])


@pytest.mark.parametrize("p, expected", [(0.25, 0.25), (0.5, 0.5), (0.75, 0.75), (None, 2 / 3)])
def test_drawn_synthetic_fraction_matches_the_probability(p, expected):
    drawn = loader_draws(p)
    n_syn = int(np.isin(drawn, SYNTHETIC).sum())
    assert len(drawn) == DRAWS
    assert binomtest(n_syn, DRAWS, expected).pvalue > 1e-3, (n_syn / DRAWS, expected)
    assert abs(n_syn / DRAWS - expected) < 0.02
    # within each kind, cases are drawn uniformly
    counts = {c: int((drawn == c).sum()) for c in REAL + SYNTHETIC}
    for group, share in ((REAL, 1 - expected), (SYNTHETIC, expected)):
        per_case = DRAWS * share / len(group)
        assert all(abs(counts[c] - per_case) < 5 * np.sqrt(per_case) for c in group), counts


def test_probabilities_refuse_what_cannot_be_drawn():
    with pytest.raises(SynthError, match=r"synthetic_probability must be in \[0, 1\], got 1.5"):
        synthetic_sampling_probabilities(REAL + SYNTHETIC, set(SYNTHETIC), 1.5)
    with pytest.raises(SynthError, match="10 real and 0 synthetic"):
        synthetic_sampling_probabilities(REAL, set(), 0.5)
    with pytest.raises(SynthError, match="0 real and 20 synthetic"):
        synthetic_sampling_probabilities(SYNTHETIC, set(SYNTHETIC), 0.5)
    only_syn = synthetic_sampling_probabilities(SYNTHETIC, set(SYNTHETIC), 1.0)
    assert np.allclose(only_syn, 1 / 20)


@pytest.mark.parametrize("name, p", [("nnUNetTrainerSynthExpand", None), ("nnUNetTrainerSynthExpand_syn25", 0.25),
                                     ("nnUNetTrainerSynthExpand_syn50", 0.5), ("nnUNetTrainerSynthExpand_syn75", 0.75),
                                     ("nnUNetTrainerSynthExpandShort", None),
                                     ("nnUNetTrainerSynthExpand_syn50Short", 0.5)])
def test_trainer_variants_carry_their_probability(name, p, monkeypatch):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.setenv("nnUNet_extTrainer", trainer_folder())
    assert recursive_find_trainer_class_by_name(name).synthetic_probability == p
