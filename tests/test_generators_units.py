"""Framework pieces on their own: registry, intensities, mask variation, baseline ranking."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nnunet_synth.errors import SynthError
from nnunet_synth.generators import registry
from nnunet_synth.generators.targeting import worst_cases
from nnunet_synth.generators.intensity import normalise_image, to_source_intensities
from nnunet_synth.generators.mask_variation import _touches, vary_mask


# -- registry ------------------------------------------------------------------------
def test_registry_lists_builtin_and_environment_entries(monkeypatch):
    monkeypatch.setenv(registry.ENV_VAR, "my-gen=some.module:MyGen")
    assert {"patch-ddpm", "my-gen"} <= set(registry.names())
    with pytest.raises(SynthError, match="some.module is not installed"):
        registry.get("my-gen")
    with pytest.raises(SynthError, match="unknown generator 'nope'"):
        registry.get("nope")
    monkeypatch.setenv(registry.ENV_VAR, "broken")
    with pytest.raises(SynthError, match="name=module:Class"):
        registry.names()


def test_registry_register_overrides_and_unregisters():
    class Fake:
        pass

    registry.register("fake-gen", Fake)
    try:
        assert registry.get("fake-gen") is Fake
        registry.register("fake-gen", "nnunet_synth.generators.base:Generator")
        from nnunet_synth.generators.base import Generator

        assert registry.get("fake-gen") is Generator
    finally:
        registry.unregister("fake-gen")
    assert "fake-gen" not in registry.names()


# -- intensities ---------------------------------------------------------------------
def test_normalise_clips_percentiles_per_channel():
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(100, 20, (40, 40)), np.full((40, 40), 7.0)]).astype(np.float32)
    image[0, 0, 0] = 1e6  # an outlier must not squash the range
    out = normalise_image(image)
    assert out.dtype == np.float32 and out.min() == -1 and out.max() == 1
    assert np.all(out[1] == 0)  # constant channel
    inner = out[0][(image[0] > np.percentile(image[0], 5)) & (image[0] < np.percentile(image[0], 95))]
    assert inner.min() > -0.9 and inner.max() < 0.9


def test_quantile_mapping_takes_the_source_distribution_and_keeps_order():
    rng = np.random.default_rng(1)
    source = rng.gamma(2.0, 50.0, (1, 30, 30))
    generated = np.tanh(rng.normal(size=(1, 30, 30)))
    mapped = to_source_intensities(generated, source)
    # Same sizes: the mapped values are exactly the source's values, rearranged in the generated order.
    np.testing.assert_allclose(np.sort(mapped.ravel()), np.sort(source.ravel()))
    assert np.array_equal(np.argsort(mapped.ravel(), kind="stable"), np.argsort(generated.ravel(), kind="stable"))


# -- mask variation ------------------------------------------------------------------
def _blob(shape, centre, radius, label=1):
    grid = np.indices(shape)
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    return np.where(dist <= radius, label, 0).astype(np.int32)


def test_vary_mask_is_seeded_and_keeps_labels_inside_the_image():
    seg = _blob((48, 48), (24, 20), 8) + _blob((48, 48), (30, 32), 4, label=2) * (_blob((48, 48), (24, 20), 8) == 0)
    a, pa = vary_mask(seg, (1.0, 1.0), 5)
    b, pb = vary_mask(seg, (1.0, 1.0), 5)
    c, _ = vary_mask(seg, (1.0, 1.0), 6)
    assert np.array_equal(a, b) and pa == pb and json.loads(json.dumps(pa)) == pa
    assert not np.array_equal(a, seg) and not np.array_equal(a, c)
    assert set(np.unique(a)) == {0, 1, 2} and a.dtype == seg.dtype
    assert _touches(a != 0) == set()
    assert pa["method"] == "affine+elastic" and pa["seed"] == 5 and len(pa["rotation_deg"]) == 1


def test_vary_mask_near_the_border_falls_back_to_smaller_deformations():
    seg = np.zeros((20, 20), np.int32)
    seg[1:4, 1:4] = 1  # one voxel from two borders: most strong draws push it out
    strengths = []
    for seed in range(8):
        out, params = vary_mask(seg, (1.0, 1.0), seed)
        assert _touches(out != 0) <= _touches(seg != 0) and 1 in out
        strengths.append(params["strength"])
    assert min(strengths) < 1.0


def test_vary_mask_anisotropic_3d_rotates_in_plane_only_and_empty_mask_stays():
    seg = _blob((10, 24, 24), (5, 12, 12), 4)
    out, params = vary_mask(seg, (3.0, 0.7, 0.7), 0)
    assert out.shape == seg.shape and len(params["rotation_deg"]) == 1 and 1 in out
    empty = np.zeros((8, 8), np.int32)
    out, params = vary_mask(empty, (1.0, 1.0), 0)
    assert not out.any() and params["method"] == "identity"


# -- baseline ranking ----------------------------------------------------------------
def _summary(folder, fold, dice_by_case):
    from nnunetv2.evaluation.evaluate_predictions import save_summary_json

    path = folder / f"fold_{fold}" / "validation"
    path.mkdir(parents=True)
    per_case = [{"reference_file": f"/gt/{case}.png", "prediction_file": f"{path}/{case}.png",
                 "metrics": {1: {"Dice": d1}, 2: {"Dice": d2}}} for case, (d1, d2) in dice_by_case.items()]
    save_summary_json({"metric_per_case": per_case, "mean": {}, "foreground_mean": {}}, str(path / "summary.json"))


def test_worst_cases_ranks_by_mean_foreground_dice(tmp_path):
    _summary(tmp_path, 0, {"a": (0.9, 0.8), "b": (0.2, float("nan"))})
    _summary(tmp_path, 1, {"c": (float("nan"), float("nan")), "d": (0.5, 0.5), "e": (0.8, 0.8)})
    cases, dice = worst_cases(tmp_path, 3, ".png", ["a", "b", "c", "d", "e"])
    assert cases == ["b", "d", "e"] and dice == {"b": 0.2, "d": 0.5, "e": 0.8}
    assert worst_cases(tmp_path, 5, ".png", list("abcde"))[0][-1] == "c"  # nothing to segment: ranks as perfect
    with pytest.raises(SynthError, match="validated only 5"):
        worst_cases(tmp_path, 6, ".png", list("abcde"))
    with pytest.raises(SynthError, match="not in the real dataset"):
        worst_cases(tmp_path, 1, ".png", list("abcd"))
    with pytest.raises(SynthError, match="no fold_"):
        worst_cases(tmp_path / "fold_0", 1, ".png", list("abcde"))


# -- checks of what is written ---------------------------------------------------------
def test_a_generated_image_must_be_finite_and_fit_the_source_dtype():
    from nnunet_synth.errors import GeneratorError
    from nnunet_synth.generators.generate import check_written_range

    check_written_range(np.array([[-0.4, 255.4]]), np.uint8, "G", "case_000")  # rounds into range
    check_written_range(np.array([[-3e4, 3e4]]), np.int16, "G", "case_000")
    for image, dtype, message in ((np.array([[0.0, 255.6]]), np.uint8, "outside the range of its data type uint8"),
                                  (np.array([[-1.0, 3.0]]), np.uint16, "values -1 to 3"),
                                  (np.array([[0.0, np.nan]]), np.float32, "NaN or infinite"),
                                  (np.array([[0.0, 1e39]]), np.float32, "outside the range of its data type float32")):
        with pytest.raises(GeneratorError, match=message) as e:
            check_written_range(image, dtype, "G", "case_000")
        assert isinstance(e.value, SynthError) and "generator G" in str(e.value) and "'case_000'" in str(e.value)


def test_non_finite_intensities_and_geometry_are_named():
    from nnunet_synth.raw_dataset import check_finite, check_same_geometry

    check_finite(np.zeros((2, 3, 3), np.float32), ["a.mha", "b.mha"], "c")
    bad = np.zeros((2, 3, 3), np.float32)
    bad[1, 0, 0] = -np.inf
    with pytest.raises(SynthError, match=r"^b.mha: 1 voxel\(s\) are NaN or infinite \(case 'c'\)"):
        check_finite(bad, ["a.mha", "b.mha"], "c")
    props = {"spacing": (1.0, 1.0), "sitk_stuff": {"spacing": (1.0, 1.0), "origin": (0.0, 0.0),
                                                   "direction": (1.0, 0.0, 0.0, 1.0)}}
    check_same_geometry(props, {"spacing": (1.0, 1.0)}, "l.png", "i.png")   # no origin to compare: spacing only
    moved = {**props, "sitk_stuff": {**props["sitk_stuff"], "origin": (0.0, 0.01)}}
    with pytest.raises(SynthError, match=r"^l.nii: origin \(0.0, 0.01\) differs from i.nii's \(0.0, 0.0\)$"):
        check_same_geometry(moved, props, "l.nii", "i.nii")
    with pytest.raises(SynthError, match="spacing"):
        check_same_geometry({**props, "spacing": (1.0, 1.1)}, props, "l.nii", "i.nii")
