"""The DiffBoost mixing mask: statistics, cell geometry, and the alpha edge cases."""
import pytest
import torch
from scipy import stats

from nnunet_synth.diffboost.mask import PatchMixMaskTransform, default_patch_edge, draw_mix_mask, resolve_patch_edge


def test_default_patch_edge_is_one_sixth_like_diffboost():
    assert default_patch_edge((384, 384)) == (64, 64)
    assert default_patch_edge((48, 96, 4)) == (8, 16, 1)


@pytest.mark.parametrize("alpha", [0.3, 0.6, 0.8])
def test_fraction_of_real_cells_has_expectation_alpha(alpha):
    torch.manual_seed(0)
    patch, edge = (48, 40), (8, 8)                       # 6 x 5 cells per mask
    masks = torch.stack([draw_mix_mask(patch, alpha, edge) for _ in range(400)])
    cells = masks[:, 0, ::8, ::8]                         # one voxel per cell
    assert cells.shape[1:] == (6, 5)
    real = int(cells.sum())
    test = stats.binomtest(real, cells.numel(), alpha)
    assert test.pvalue > 1e-3, (real / cells.numel(), alpha)
    # the voxel fraction matches too (cells are equal-sized here)
    assert abs(masks.float().mean().item() - alpha) < 0.02


def test_cells_have_edge_r_and_cover_partial_borders():
    torch.manual_seed(1)
    patch, edge = (20, 13, 9), (4, 5, 3)
    for _ in range(20):
        m = draw_mix_mask(patch, 0.5, edge)[0].numpy()
        assert m.shape == patch
        for z in range(patch[0]):
            for y in range(patch[1]):
                for x in range(patch[2]):
                    assert m[z, y, x] == m[z - z % 4, y - y % 5, x - x % 3]
    # cells are drawn independently: neighbouring cells differ somewhere
    many = torch.stack([draw_mix_mask(patch, 0.5, edge)[0] for _ in range(50)])
    assert (many[:, 0, 0, 0] != many[:, 4, 0, 0]).any()
    assert (many[:, 0, 0, 0] != many[:, 0, 5, 0]).any()
    assert (many[:, 0, 0, 0] != many[:, 0, 0, 3]).any()


def test_alpha_zero_is_pure_twin_and_one_is_pure_real():
    for _ in range(10):
        assert not draw_mix_mask((16, 16), 0.0, (4, 4)).any()
        assert draw_mix_mask((16, 16), 1.0, (4, 4)).all()


def test_transform_adds_mask_of_the_sample_size():
    t = PatchMixMaskTransform(0.6, (4, 4))
    out = t(image=torch.zeros(2, 12, 10), segmentation=torch.zeros(1, 12, 10))
    assert out["mix_mask"].shape == (1, 12, 10) and out["mix_mask"].dtype == torch.bool


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        PatchMixMaskTransform(1.5, (4, 4))
    with pytest.raises(ValueError, match="patch_edge"):
        resolve_patch_edge((4, 4, 4), (32, 32))
    with pytest.raises(ValueError, match="patch_edge"):
        resolve_patch_edge(0, (32, 32))
    assert resolve_patch_edge(16, (32, 64)) == (16, 16)
    assert resolve_patch_edge(None, (48, 96)) == (8, 16)
