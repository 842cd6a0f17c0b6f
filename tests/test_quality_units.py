"""The quality gate's math on small arrays: consistency and the band, memorization, fidelity, decisions."""
import numpy as np
import pytest

from nnunet_synth.errors import SynthError
from nnunet_synth.manifest import GeneratorRecord, Manifest, SyntheticCase
from nnunet_synth.quality import fidelity, memorization
from nnunet_synth.quality.consistency import Band, case_consistency, parse_band
from nnunet_synth.quality.inspection import apply_decisions, check_previous


def disc(shape=(1, 40, 40), centre=(20, 20), radius=8):
    z, y, x = np.indices(shape)
    return ((y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius ** 2).astype(np.uint8)


# -- consistency ---------------------------------------------------------------------------------
def test_consistency_is_the_foreground_dice():
    mask = disc()
    assert case_consistency(mask, mask, [1]) == 1.0
    assert case_consistency(disc(centre=(8, 8), radius=5), disc(centre=(30, 30), radius=5), [1]) == 0.0
    half = mask.copy()
    half[:, :, :20] = 0
    expected = 2 * half.sum() / (half.sum() + mask.sum())
    assert case_consistency(half, mask, [1]) == pytest.approx(expected)


def test_consistency_conventions_for_empty_labels():
    empty = np.zeros((1, 10, 10), np.uint8)
    assert case_consistency(empty, empty, [1]) == 1.0           # nothing to get wrong
    assert case_consistency(disc((1, 10, 10), (5, 5), 2), empty, [1]) == 0.0  # a lesion where the mask has none
    two = disc() + disc(centre=(5, 5), radius=2) * 2            # label 2 only in the mask: Dice 0 for it
    assert case_consistency(disc(), two, [1, 2]) == pytest.approx(0.5)
    assert case_consistency(two, two, [(1, 2), 2]) == 1.0       # regions
    with pytest.raises(ValueError, match="shape"):
        case_consistency(empty, np.zeros((1, 9, 10)), [1])


def test_band_parsing_and_bad_bands():
    assert parse_band("0.5") == Band(0.5, 1.0)
    assert parse_band("0.2:0.9") == Band(0.2, 0.9)
    assert Band(0.2, 0.9).contains(0.2) and Band(0.2, 0.9).contains(0.9) and not Band(0.2, 0.9).contains(0.91)
    with pytest.raises(SynthError, match="LOW is greater than HIGH"):
        parse_band("0.8:0.2")
    with pytest.raises(SynthError, match="between 0 and 1"):
        parse_band("1.5")
    with pytest.raises(SynthError, match="expected LOW or LOW:HIGH"):
        parse_band("high")
    with pytest.raises(SynthError, match="between 0 and 1"):
        parse_band("nan")


# -- memorization --------------------------------------------------------------------------------
def test_exact_copy_is_flagged_and_noise_is_not():
    rng = np.random.default_rng(0)
    train = [rng.normal(100, 20, (1, 48, 56)) + 50 * disc((1, 48, 56), (20 + i, 25), 6 + i) for i in range(4)]
    copy = train[2].copy()
    noise = rng.normal(100, 20, (1, 48, 56))
    reference = np.stack([memorization.reduced(t) for t in train])
    query = np.stack([memorization.reduced(copy), memorization.reduced(noise)])
    best, value = memorization.nearest(memorization.ncc_matrix(query, reference), ["a", "b", "c", "d"])
    assert best[0] == "c" and value[0] == pytest.approx(1.0)
    assert value[0] >= 0.95 > value[1]
    assert abs(value[1]) < 0.3


def test_ncc_is_invariant_to_brightness_and_contrast_and_zero_for_constant_images():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1, 30, 30))
    m = memorization.ncc_matrix(np.stack([memorization.reduced(a), memorization.reduced(np.full(a.shape, 7.0))]),
                                np.stack([memorization.reduced(3 * a + 10)]))
    assert m[0, 0] == pytest.approx(1.0) and m[1, 0] == 0.0


def test_reduced_grid_for_2d_and_3d():
    assert memorization.reduced(np.zeros((1, 37, 91))).shape == memorization.GRID_2D
    assert memorization.reduced(np.zeros((20, 40, 50))).shape == memorization.GRID_3D
    ramp = np.tile(np.arange(100, dtype=float), (1, 80, 1))
    r = memorization.reduced(ramp)
    assert np.all(np.diff(r[0]) > 0)  # the resampling keeps the image's content, not only its size


def test_dinov2_features_flag_a_copy(tmp_path):
    from nnunet_synth.testing.tiny_dinov2 import write_tiny_dinov2

    folder = write_tiny_dinov2(tmp_path / "dinov2")
    features = memorization.Dinov2Features(folder, "cpu")
    rng = np.random.default_rng(2)
    real = [rng.normal(size=(1, 40, 40)) + 3 * disc((1, 40, 40), (10 + 5 * i, 20), 6) for i in range(3)]
    f_real = np.stack([features(r) for r in real])
    f_copy = features(real[1].copy())
    best, value = memorization.nearest(memorization.cosine_matrix(f_copy[None], f_real), ["x", "y", "z"])
    assert best == ["y"] and value[0] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(SynthError, match="no config.json"):
        memorization.Dinov2Features(tmp_path, "cpu")


# -- fidelity ------------------------------------------------------------------------------------
def test_frechet_distance_of_a_set_to_itself_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(60, 8)) @ rng.normal(size=(8, 8))
    assert fidelity.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    distances = [fidelity.frechet_distance(features, features + rng.normal(0, s, features.shape))
                 for s in (0.1, 1.0, 3.0)]
    assert 0 < distances[0] < distances[1] < distances[2]
    # fewer cases than features: singular covariances still give a finite, near-zero self distance
    few = rng.normal(size=(5, 32))
    assert fidelity.frechet_distance(few, few) == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(fidelity.frechet_distance(few[:1], few))


def test_frechet_distance_matches_the_closed_form_for_shifted_means():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(200, 3))
    assert fidelity.frechet_distance(a, a + np.array([1.0, 2.0, 0.0])) == pytest.approx(5.0, rel=1e-6)


def test_wasserstein_inside_and_outside_the_lesion():
    mask = disc()
    image = np.where(mask > 0, 200.0, 50.0)[None].astype(float)
    inside, outside = fidelity.sample_intensities(image, mask[None], seed=0)
    assert len(inside) == mask.sum() and len(outside) == mask.size - mask.sum()
    brighter_lesion = np.where(mask > 0, 230.0, 50.0)[None]
    inside2, outside2 = fidelity.sample_intensities(brighter_lesion, mask[None], seed=0)
    assert fidelity.wasserstein(inside, inside2) == pytest.approx(30.0)
    assert fidelity.wasserstein(outside, outside2) == 0.0
    assert np.isnan(fidelity.wasserstein(np.zeros(0), outside))
    few_in, few_out = fidelity.sample_intensities(image, mask[None], seed=0, max_voxels=10)
    assert len(few_in) == 10 and len(few_out) == 10


# -- decisions in synthesis.json ----------------------------------------------------------------
def manifest_with(kept: dict[str, bool]) -> Manifest:
    m = Manifest("Dataset001_R", {"g": GeneratorRecord("test", "1", "", "", [])})
    for case, k in kept.items():
        m.cases[case] = SyntheticCase("g", case.split("_syn")[0], "twin", 1, kept=k)
    return m


def test_band_decisions_keep_an_earlier_gates_drop_and_refuse_other_settings(tmp_path):
    m = manifest_with({"a_syn000": True, "b_syn000": True, "c_syn000": False})
    decision = {"baseline": "/b", "fold": 0, "band": [0.5, 1.0], "use_mirroring": True}
    records = {"a_syn000": {**decision, "consistency": 0.9}, "b_syn000": {**decision, "consistency": 0.1},
               "c_syn000": {**decision, "consistency": 0.95}}
    assert apply_decisions(m, records, Band(0.5)) == 1
    assert {c: x.kept for c, x in m.cases.items()} == {"a_syn000": True, "b_syn000": False, "c_syn000": False}
    assert m.cases["c_syn000"].extra["inspection"]["kept_before"] is False
    check_previous(m, decision, tmp_path / "synthesis.json", overwrite=False)  # same settings: a rerun is fine
    other = {**decision, "band": [0.05, 1.0]}
    with pytest.raises(SynthError, match="--overwrite"):
        check_previous(m, other, tmp_path / "synthesis.json", overwrite=False)
    check_previous(m, other, tmp_path / "synthesis.json", overwrite=True)
    # the wider band brings back the case this gate dropped, never the one an earlier gate dropped
    records = {c: {**r, "band": [0.05, 1.0]} for c, r in records.items()}
    assert apply_decisions(m, records, Band(0.05)) == 0
    assert {c: x.kept for c, x in m.cases.items()} == {"a_syn000": True, "b_syn000": True, "c_syn000": False}


def test_feature_tiles_follow_nnunets_sliding_window_and_cover_the_image():
    from nnunet_synth.quality.baseline import tiles

    assert tiles((1, 64, 64), (64, 64), 0.5) == [(slice(None), 0, slice(0, 64), slice(0, 64))]
    found = tiles((3, 100, 70), (64, 64), 0.5)  # a 2D patch on a 3D array: every slice, 3 x 2 tiles each
    assert len(found) == 3 * 6
    covered = np.zeros((1, 3, 100, 70), bool)
    for t in found:
        covered[t] = True
        assert covered[t].shape == (1, 64, 64)
    assert covered.all()
