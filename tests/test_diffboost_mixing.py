"""Output-level mixing of logits at every deep-supervision scale."""
import pytest
import torch
import torch.nn.functional as F
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

from nnunet_synth.diffboost.mask import draw_mix_mask
from nnunet_synth.diffboost.trainer import OutputMixLoss, mix_outputs


def outputs(batch, shape, scales=(1, 2, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((2 * batch, 3, *[s // k for s in shape]), generator=g) for k in scales]


@pytest.mark.parametrize("shape", [(16, 24), (8, 16, 16)])
def test_each_scale_takes_real_where_the_downsampled_mask_is_set(shape):
    torch.manual_seed(0)
    mask = torch.stack([draw_mix_mask(shape, 0.5, (4,) * len(shape)) for _ in range(2)])
    out = outputs(2, shape)
    mixed = mix_outputs(out, mask)
    for o, m in zip(out, mixed):
        small = F.interpolate(mask.float(), size=o.shape[2:], mode="nearest-exact")[:, 0] > 0.5
        real, twin = o[:2], o[2:]
        for b in range(2):
            assert torch.equal(m[b][:, small[b]], real[b][:, small[b]])
            assert torch.equal(m[b][:, ~small[b]], twin[b][:, ~small[b]])
    # with cells of 4 voxels the half-resolution mask keeps every cell
    half = F.interpolate(mask.float(), size=out[1].shape[2:], mode="nearest-exact") > 0.5
    assert torch.equal(half, mask[(..., *[slice(None, None, 2)] * len(shape))])


def test_odd_patch_scales_take_real_where_nnunets_downsampled_target_mask_is_set():
    # 20 x 28 halves to 10 x 14, 5 x 7, then 2.5 x 3.5: sizes where rounding rules differ. The reference
    # is nnU-Net's own target downsampling, applied to the mask as if it were a segmentation.
    torch.manual_seed(3)
    shape, scales = (20, 28), [[1.0, 1.0], [0.5, 0.5], [0.25, 0.25], [0.125, 0.125]]
    mask = torch.stack([draw_mix_mask(shape, 0.5, (3, 5)) for _ in range(2)])
    per_sample = [DownsampleSegForDSTransform(scales)(segmentation=m.to(torch.int16))["segmentation"] for m in mask]
    expected_masks = [torch.stack([s[i] for s in per_sample]).bool() for i in range(len(scales))]
    assert [tuple(m.shape[2:]) for m in expected_masks] == [(20, 28), (10, 14), (5, 7), (2, 4)]
    g = torch.Generator().manual_seed(0)
    out = [torch.randn((4, 3, *m.shape[2:]), generator=g) for m in expected_masks]
    for o, m, got in zip(out, expected_masks, mix_outputs(out, mask)):
        assert 0 < int(m.sum()) < m.numel()            # both halves contribute at every scale
        assert torch.equal(got, torch.where(m, o[:2], o[2:]))


def test_all_true_mask_returns_real_logits_exactly_and_all_false_twin():
    out = outputs(3, (8, 8))
    ones = torch.ones((3, 1, 8, 8), dtype=torch.bool)
    for o, m in zip(out, mix_outputs(out, ones)):
        assert torch.equal(m, o[:3])
    for o, m in zip(out, mix_outputs(out, ~ones)):
        assert torch.equal(m, o[3:])


def test_batch_mismatch_is_an_error():
    with pytest.raises(ValueError, match="twice the mask batch"):
        mix_outputs(torch.zeros(5, 2, 4, 4), torch.ones(2, 1, 4, 4, dtype=torch.bool))


def test_loss_without_mask_is_the_plain_loss():
    seen = []
    loss = OutputMixLoss(lambda output, target: seen.append(output.shape[0]) or output.sum())
    x = torch.ones(4, 2, 4, 4)
    assert loss(x, None) == x.sum() and seen == [4]
    loss.mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    assert loss(x, None) == x[:2].sum() and seen == [4, 2]
