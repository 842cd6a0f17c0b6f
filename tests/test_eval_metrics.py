"""Metrics on shapes with known answers, edge cases, and agreement with MONAI and medpy."""
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from nnunet_synth.evaluation.metrics import binary_metrics, case_metrics, image_diagonal


def blob(shape, seed, level=0.55):
    """A random smooth shape: thresholded, smoothed noise."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random(shape), sigma=[s / 8 for s in shape])
    return smooth > np.quantile(smooth, level)


def test_single_voxels_give_the_exact_anisotropic_distance():
    ref = np.zeros((10, 12, 14), bool)
    pred = np.zeros_like(ref)
    ref[2, 3, 4] = True
    pred[5, 7, 4] = True
    spacing = (2.5, 0.8, 0.5)
    m = binary_metrics(pred, ref, spacing)
    expected = math.hypot(3 * 2.5, 4 * 0.8)
    assert m["Dice"] == 0 and m["IoU"] == 0
    for key in ("HD95", "HD95_pooled", "ASSD"):
        assert m[key] == pytest.approx(expected, rel=1e-12)


def test_parallel_lines_are_a_constant_distance_apart():
    # One-pixel-thick lines: every pixel is surface and its nearest partner is straight across.
    ref = np.zeros((30, 40), bool)
    pred = np.zeros_like(ref)
    ref[10, 5:30] = True
    pred[13, 5:30] = True
    m = binary_metrics(pred, ref, (2.0, 0.5))
    assert m["HD95"] == m["HD95_pooled"] == m["ASSD"] == pytest.approx(6.0)


def test_identical_masks_have_zero_distance_and_dice_one():
    mask = blob((24, 24, 16), seed=1)
    m = binary_metrics(mask, mask, (1.0, 1.0, 3.0))
    assert m["Dice"] == m["IoU"] == m["Precision"] == m["Recall"] == 1.0
    assert m["HD95"] == m["HD95_pooled"] == m["ASSD"] == 0.0


def test_concentric_spheres_in_mm_are_their_radius_difference_apart():
    spacing = np.array([2.0, 0.7, 0.7])
    shape = (40, 100, 100)
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"))
    r = np.sqrt(((grid - np.array([40, 35, 35]).reshape(3, 1, 1, 1)) ** 2).sum(0))
    ref, pred = r <= 20.0, r <= 26.0
    m = binary_metrics(pred, ref, spacing)
    # Voxelization moves each surface by at most one voxel, i.e. by less than the largest spacing.
    assert m["ASSD"] == pytest.approx(6.0, abs=spacing.max())
    assert m["HD95"] == pytest.approx(6.0, abs=spacing.max())
    assert m["Dice"] == pytest.approx(2 * 20 ** 3 / (20 ** 3 + 26 ** 3), rel=0.05)


def test_concentric_discs_and_precision_recall():
    yy, xx = np.mgrid[:80, :80]
    r = np.hypot((yy - 40) * 0.5, (xx - 40) * 0.5)
    ref, pred = r <= 10, r <= 13
    m = binary_metrics(pred, ref, (0.5, 0.5))
    assert m["Recall"] == 1.0
    assert m["Precision"] == pytest.approx(ref.sum() / pred.sum())
    assert m["ASSD"] == pytest.approx(3.0, abs=0.5)


def test_dummy_axis_of_2d_readers_is_squeezed():
    ref, pred = blob((48, 40), 2), blob((48, 40), 3)
    flat = binary_metrics(pred, ref, (0.3, 0.4))
    dummy = binary_metrics(pred[None], ref[None], (999.0, 0.3, 0.4))
    assert flat == dummy


def test_both_empty_gives_nan_and_flags():
    empty = np.zeros((1, 16, 16), bool)
    m = binary_metrics(empty, empty, (999, 1, 1))
    for key in ("Dice", "IoU", "Precision", "Recall", "HD95", "HD95_pooled", "ASSD"):
        assert math.isnan(m[key]), key
    assert m["empty_pred"] and m["empty_ref"] and m["n_pred"] == m["n_ref"] == 0


@pytest.mark.parametrize("empty_side", ["pred", "ref"])
def test_one_empty_gives_zero_overlap_and_the_image_diagonal(empty_side):
    mask = np.zeros((1, 20, 30), bool)
    mask[0, 5:9, 5:12] = True
    empty = np.zeros_like(mask)
    pred, ref = (empty, mask) if empty_side == "pred" else (mask, empty)
    m = binary_metrics(pred, ref, (999, 0.5, 2.0))
    diagonal = math.hypot(20 * 0.5, 30 * 2.0)
    assert image_diagonal((20, 30), (0.5, 2.0)) == pytest.approx(diagonal)
    assert m["Dice"] == 0 and m["IoU"] == 0
    assert m["HD95"] == m["HD95_pooled"] == m["ASSD"] == pytest.approx(diagonal)
    assert m[f"empty_{empty_side}"] and not m["empty_" + ("ref" if empty_side == "pred" else "pred")]
    assert math.isnan(m["Precision"] if empty_side == "pred" else m["Recall"])


def test_ignore_label_is_masked_out():
    ref = np.zeros((20, 20), np.uint8)
    pred = np.zeros_like(ref)
    ref[5:10, 5:10] = 1
    pred[5:10, 5:10] = 1
    ref[15:18, 15:18] = 2  # ignore region: the prediction of label 1 there must not count
    pred[15:18, 15:18] = 1
    m = case_metrics(pred, ref, (1.0, 1.0), [1], ignore_label=2)[1]
    assert m["Dice"] == 1.0 and m["FP"] == 0 and m["HD95"] == 0.0
    assert m["TN"] == 20 * 20 - 25 - 9
    without = case_metrics(pred, ref, (1.0, 1.0), [1])[1]
    assert without["FP"] == 9 and without["HD95"] > 0


def test_regions_are_unions_of_labels():
    ref = np.zeros((12, 12), np.uint8)
    ref[2:5, 2:5], ref[6:9, 6:9] = 1, 2
    pred = ref.copy()
    pred[pred == 2] = 1
    metrics = case_metrics(pred, ref, (1, 1), [1, (1, 2)])
    assert metrics[(1, 2)]["Dice"] == 1.0
    assert metrics[1]["Dice"] == pytest.approx(2 * 9 / (9 + 18))


def test_overlap_counts_match_nnunet():
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn

    ref, pred = blob((30, 30, 10), 4), blob((30, 30, 10), 5)
    m = binary_metrics(pred, ref, (1, 1, 1))
    tp, fp, fn, tn = compute_tp_fp_fn_tn(ref, pred)
    assert (m["TP"], m["FP"], m["FN"], m["TN"]) == (tp, fp, fn, tn)
    assert m["Dice"] == 2 * tp / (2 * tp + fp + fn) and m["IoU"] == tp / (tp + fp + fn)


@pytest.mark.parametrize("shape,spacing,seed", [((64, 56), (0.7, 1.3), 10), ((24, 40, 36), (3.0, 0.8, 0.6), 11),
                                                ((30, 30, 30), (1.0, 1.0, 1.0), 12)])
def test_agrees_with_monai_and_medpy_on_random_shapes(shape, spacing, seed):
    import torch
    from medpy.metric import binary as medpy_binary
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    ref, pred = blob(shape, seed), blob(shape, seed + 100)
    # Touch the image border too: surfaces there must count as MONAI and medpy count them.
    ref[0] = True
    m = binary_metrics(pred, ref, spacing)
    p, r = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(ref)[None, None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_hd95 = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=spacing).item()
        monai_assd = compute_average_surface_distance(p, r, include_background=True, symmetric=True,
                                                      spacing=spacing).item()
    assert m["HD95"] == pytest.approx(monai_hd95, rel=1e-6)
    assert m["ASSD"] == pytest.approx(monai_assd, rel=1e-6)
    assert m["HD95_pooled"] == pytest.approx(medpy_binary.hd95(pred, ref, voxelspacing=spacing), rel=1e-9)
    assert m["ASSD"] == pytest.approx(medpy_binary.assd(pred, ref, voxelspacing=spacing), rel=1e-9)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(np.ones((4, 4), bool), np.ones((4, 5), bool), (1, 1))


@pytest.mark.parametrize("shape,spacing,seed", [((40, 36), (0.5, 1.5), 20), ((16, 30, 28), (2.5, 0.7, 0.9), 21)])
def test_dense_transform_and_tree_give_the_same_distances(shape, spacing, seed):
    from nnunet_synth.evaluation.metrics import surface_distances

    pred, ref = blob(shape, seed), blob(shape, seed + 50)
    edt = surface_distances(pred, ref, spacing, method="edt")
    tree = surface_distances(pred, ref, spacing, method="kdtree")
    # Same voxel order (np.nonzero and np.argwhere are both C order), same nearest distances.
    np.testing.assert_allclose(edt.pred_to_ref, tree.pred_to_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(edt.ref_to_pred, tree.ref_to_pred, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="method"):
        surface_distances(pred, ref, spacing, method="fast")
