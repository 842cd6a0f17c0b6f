"""Real and twin stay voxel-aligned through the loader crop and nnU-Net's whole augmentation pipeline."""
import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.base.basic_transform import ImageOnlyTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_synth.diffboost.loader import DiffBoostDataLoader
from nnunet_synth.diffboost.mask import PatchMixMaskTransform
from nnunet_synth.diffboost.store import TwinStore
from nnunet_synth.diffboost.transforms import PerHalfTransform, twin_pipeline

SHIFT = 3.25


def nnunet_pipeline(patch_size, dummy_2d=False, mirror_axes=(0, 1), use_mask_for_norm=None):
    """nnUNetTrainer's own training pipeline, with every spatial augmentation forced on."""
    ds_scales = [[1.0] * len(patch_size), [0.5] * len(patch_size), [0.25] * len(patch_size)]
    pipeline = nnUNetTrainer.get_training_transforms(
        patch_size, (-np.pi / 6, np.pi / 6), ds_scales, mirror_axes, dummy_2d, use_mask_for_norm=use_mask_for_norm)
    for t in pipeline.transforms:
        if isinstance(t, SpatialTransform):
            t.p_rotation, t.p_scaling, t.p_elastic_deform = 1.0, 1.0, 1.0
    return pipeline


def without_intensity(pipeline: ComposeTransforms) -> ComposeTransforms:
    def intensity(t):
        return isinstance(t, ImageOnlyTransform) or (isinstance(t, RandomTransform) and intensity(t.transform))
    return ComposeTransforms([t for t in pipeline.transforms if not intensity(t)])


def sample(shape, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.randn((channels, *shape), generator=g)
    seg = (torch.rand((1, *shape), generator=g) > 0.5).to(torch.int16)
    return real, seg


@pytest.mark.parametrize("patch_size, dummy_2d, channels", [((16, 16), False, 1), ((8, 16, 16), False, 2),
                                                            ((8, 16, 16), True, 1)])
def test_twin_minus_real_is_constant_after_spatial_augmentation(patch_size, dummy_2d, channels):
    pipeline = twin_pipeline(without_intensity(nnunet_pipeline(patch_size, dummy_2d, tuple(range(len(patch_size))))))
    for seed in range(4):
        torch.manual_seed(seed)
        # Large input around the patch: rotation, scaling and elastic deformation never sample outside it, so
        # no voxel is part padding (zero in both halves, which would make twin - real differ from SHIFT there).
        # (Pseudo-2D augmentation leaves the first axis to the loader's crop.)
        shape = [s if dummy_2d and axis == 0 else 5 * s for axis, s in enumerate(patch_size)]
        real, seg = sample(shape, channels, seed)
        out = pipeline(image=torch.cat((real, real + SHIFT)), segmentation=seg)
        assert out["image"].shape == (channels, *patch_size) == out["twin"].shape
        assert torch.allclose(out["twin"] - out["image"], torch.full_like(out["image"], SHIFT), atol=1e-4)
        centre = tuple(slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(shape, patch_size))
        assert not torch.allclose(out["image"], real[(slice(None),) + centre], atol=1e-3)   # it was augmented
        assert isinstance(out["segmentation"], list) and out["segmentation"][0].shape == (1, *patch_size)


def test_synchronized_intensity_gives_identical_halves_and_independent_does_not():
    pipeline = nnunet_pipeline((16, 16))
    for t in pipeline.transforms:                      # make every intensity transform fire
        if isinstance(t, RandomTransform):
            t.apply_probability = 1.0
    synced, independent = twin_pipeline(pipeline, synchronize_intensity=True), twin_pipeline(pipeline)
    differs = False
    for seed in range(3):
        torch.manual_seed(seed)
        real, seg = sample((48, 48), 1, seed)
        out = synced(image=torch.cat((real, real.clone())), segmentation=seg)
        assert torch.allclose(out["image"], out["twin"], atol=1e-5)
        out = independent(image=torch.cat((real, real.clone())), segmentation=seg)
        differs |= not torch.allclose(out["image"], out["twin"], atol=1e-3)
    assert differs


def test_mask_transform_per_half_uses_real_channel_indices():
    # Two channels, only the first normalised with the mask: nnU-Net's MaskImageTransform then zeroes
    # channel 0 outside the non-zero region. Per half, that is real channel 0 and twin channel 0 (stacked
    # channel 2), while both channels 1 keep their values.
    pipeline = nnunet_pipeline((16, 16), use_mask_for_norm=[True, False])
    wrapped = twin_pipeline(pipeline)
    masking = [t for t in wrapped.transforms[0].transforms
               if isinstance(t, PerHalfTransform) and "MaskImage" in repr(t.transform)]
    assert len(masking) == 1
    real, seg = sample((24, 24), channels=2)
    seg[:, :10] = -1                                     # outside the non-zero region
    twin = real + SHIFT
    out = masking[0](image=torch.cat((real, twin)), segmentation=seg)["image"]
    outside = (seg[0] < 0)
    expected = torch.cat((real, twin)).clone()
    expected[0][outside] = 0
    expected[2][outside] = 0
    assert torch.equal(out, expected)

    # and through the whole pipeline: masked voxels stay zero in both halves (none of nnU-Net's later
    # transforms changes intensities), so the real and twin zero patterns are identical
    torch.manual_seed(0)
    out = twin_pipeline(without_intensity(pipeline))(image=torch.cat((real, twin)), segmentation=seg)
    zero_real, zero_twin = out["image"][0] == 0, out["twin"][0] == 0
    assert zero_real.any() and torch.equal(zero_real, zero_twin)


class InMemoryDataset:
    """The part of nnU-Net's dataset interface the loader uses."""

    def __init__(self, cases):
        self.cases = cases
        self.identifiers = sorted(cases)

    def load_case(self, key):
        data, seg = self.cases[key]
        locations = {1: np.argwhere(seg == 1)}
        return data, seg, None, {"class_locations": locations}


@pytest.mark.parametrize("shape, patch", [((1, 40, 36), (16, 16)), ((20, 24, 28), (8, 12, 16))])
def test_loader_crops_twin_with_the_real_box(tmp_path, shape, patch):
    import blosc2
    rng = np.random.default_rng(0)
    cases, twins = {}, {}
    for i in range(3):
        data = rng.normal(size=(1, *shape)).astype(np.float32)
        seg = (rng.random((1, *shape)) > 0.7).astype(np.int16)
        cases[f"c{i}"] = (data, seg)
        twins[f"c{i}"] = [f"c{i}_syn000", f"c{i}_syn001"]
        for k, twin_id in enumerate(twins[f"c{i}"]):
            blosc2.asarray(data + SHIFT * (k + 1), urlpath=str(tmp_path / f"{twin_id}.b2nd"))
    lm = LabelManager({"background": 0, "lesion": 1}, regions_class_order=None)
    store = TwinStore(tmp_path, twins)
    transforms = twin_pipeline(ComposeTransforms([]), extra=[PatchMixMaskTransform(0.6, (4,) * len(patch))])
    loader = DiffBoostDataLoader(InMemoryDataset(cases), 4, patch, patch, lm, store, transforms,
                                 oversample_foreground_percent=0.5)
    used = set()
    for _ in range(5):
        batch = next(loader)
        assert batch["data"].shape == batch["twin"].shape == (4, 1, *patch)
        assert batch["mix_mask"].shape == (4, 1, *patch)
        for j, twin_id in enumerate(batch["twin_keys"]):
            k = int(twin_id[-3:]) + 1
            inside = batch["target"][j] >= 0                     # not padding
            diff = (batch["twin"][j] - batch["data"][j])[inside]
            assert torch.allclose(diff, torch.full_like(diff, SHIFT * k), atol=1e-5)
            used.add(twin_id)
    assert {t[-6:] for t in used} == {"syn000", "syn001"}      # both twins are drawn

    # K sampling: only the first twin of each case
    loader.twins = TwinStore(tmp_path, twins, twins_per_case=1)
    assert all(t.endswith("syn000") for _ in range(3) for t in next(loader)["twin_keys"])
