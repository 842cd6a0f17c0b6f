"""Lesion placement for sd-inpaint: region, margins, shapes from other cases, areas, seeds, bank file."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from nnunet_synth.errors import SynthError
from nnunet_synth.generators.sd.placement import (
    BORDER_MARGIN_MM, LESION_MARGIN_MM, LesionBank, LesionShape, _valid_offsets, allowed_region, draw_lesion,
    imaged_region, place_lesion)

SPACING = (0.2, 0.2)  # mm; the 160 x 200 test image is 32 x 40 mm


def fan(shape=(160, 200), apex=(0, 100), radius=150, half_angle_deg=40):
    """A convex ultrasound sector opening downwards from ``apex``."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    dy, dx = yy - apex[0], xx - apex[1]
    return (np.hypot(dy, dx) <= radius) & (np.abs(np.degrees(np.arctan2(dx, dy))) <= half_angle_deg)


def ellipse(shape, centre, axes, angle_deg=0.0):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    a = np.deg2rad(angle_deg)
    u = (yy - centre[0]) * np.cos(a) + (xx - centre[1]) * np.sin(a)
    v = -(yy - centre[0]) * np.sin(a) + (xx - centre[1]) * np.cos(a)
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1


def ultrasound(sector, seed=0):
    """Speckle in [40, 255] inside the sector on a black (0) background."""
    return np.where(sector, np.random.default_rng(seed).uniform(40, 255, sector.shape), 0.0)


def erode_mm(region, margin_mm, spacing=SPACING):
    return ndimage.distance_transform_edt(np.pad(region, 1), sampling=spacing)[1:-1, 1:-1] > margin_mm


def near(mask, margin_mm, spacing=SPACING):
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= margin_mm


def bank_cases(n=4, spacing=(0.1, 0.1)):
    """Case c<i> holds one elliptic lesion of area about 10 + 6 i mm^2 (at 0.1 mm)."""
    cases = []
    for i in range(n):
        seg = np.zeros((120, 120), np.uint8)
        seg[ellipse(seg.shape, (60, 60), (15 + 5 * i, 22), 25 * i)] = 1
        cases.append(SimpleNamespace(case_id=f"c{i}", seg=seg, spacing=spacing))
    return cases


@pytest.fixture(scope="module")
def bank():
    return LesionBank.from_cases(bank_cases())


@pytest.fixture(scope="module")
def scene():
    sector = fan()
    seg = np.zeros(sector.shape, np.uint8)
    seg[ellipse(seg.shape, (70, 90), (12, 16))] = 1
    seg[ellipse(seg.shape, (110, 120), (8, 8))] = 1
    return ultrasound(sector), seg, sector


def test_imaged_region_is_the_sector_eroded_by_the_margin():
    sector = fan()
    image = ultrasound(sector)
    assert (imaged_region(image, SPACING, border_margin_mm=0) == sector).all()
    assert (imaged_region(image, SPACING) == erode_mm(sector, BORDER_MARGIN_MM)).all()
    dark = sector & (np.random.default_rng(1).random(sector.shape) < 0.05)
    image[dark] = 0                 # dark speckle, inside and on the sector's edge
    image[150:156, 5:25] = 255      # burnt-in text on the background
    region = imaged_region(image, SPACING, border_margin_mm=0)
    edge = sector & ~ndimage.binary_erosion(sector)
    # Inside, the dark speckle is imaged; only a dark pixel on the 1-pixel edge may be left out.
    assert not (region & ~sector).any() and not (sector & ~region & ~(dark & edge)).any()
    margin = imaged_region(image, SPACING)
    assert not (margin & ~erode_mm(sector, BORDER_MARGIN_MM)).any()
    assert not (erode_mm(sector, BORDER_MARGIN_MM + SPACING[0]) & ~margin).any()


def test_without_black_border_the_region_is_the_whole_image_minus_the_margin():
    image = np.random.default_rng(0).uniform(40, 255, (60, 80))
    image[50:, 30:50] = 0  # a dark shadow reaching the edge is still imaged
    region = imaged_region(image, (0.5, 0.25), border_margin_mm=1.0)
    yy, xx = np.mgrid[:60, :80]
    inside = (np.minimum(yy + 1, 60 - yy) * 0.5 > 1.0) & (np.minimum(xx + 1, 80 - xx) * 0.25 > 1.0)
    assert (region == inside).all()


def test_new_lesion_lies_in_the_region_and_apart_from_existing_lesions(scene, bank):
    image, seg, sector = scene
    allowed = erode_mm(sector, BORDER_MARGIN_MM) & ~near(seg != 0, LESION_MARGIN_MM)
    assert (allowed_region(image, seg, SPACING) == allowed).all()
    for seed in range(8):
        p = place_lesion(image, seg, SPACING, bank, "c0", seed)
        assert p is not None and p.mask.any()
        assert not (p.mask & ~allowed).any()
        y0, x0, y1, x1 = p.bbox
        assert p.mask[y0:y1, x0:x1].sum() == p.mask.sum()
        assert p.area_mm2 == pytest.approx(p.mask.sum() * SPACING[0] * SPACING[1])
        assert ndimage.label(p.mask, structure=np.ones((3, 3)))[1] == 1
        json.dumps(p.info)
        assert p.info["seed"] == seed and p.info["region"]["method"] == "image sector"


def test_placement_is_determined_by_the_seed(scene, bank):
    image, seg, _ = scene
    a, b = (place_lesion(image, seg, SPACING, bank, "c0", 7) for _ in range(2))
    assert (a.mask == b.mask).all() and a.info == b.info
    others = [place_lesion(image, seg, SPACING, bank, "c0", seed).mask for seed in range(8, 12)]
    assert sum((a.mask == m).all() for m in others) == 0


def test_the_shape_comes_from_another_case(scene, bank):
    image, seg, _ = scene
    used = {place_lesion(image, seg, SPACING, bank, "c2", seed).shape_case_id for seed in range(12)}
    assert "c2" not in used and len(used) > 1


def test_only_the_source_s_own_shapes_are_used_and_said_so():
    own = LesionBank.from_cases(bank_cases()[:1])
    patch, info = draw_lesion(own, "c0", SPACING, np.random.default_rng(0))
    assert patch.any() and info["shape_case_id"] == "c0" and info["shape_from_source"] is True
    assert "c0" in info["note"]


def test_the_area_follows_the_bank_at_another_spacing(bank):
    areas = [draw_lesion(bank, "c0", (0.25, 0.15), np.random.default_rng(seed))[1]["area_mm2"]
             for seed in range(50)]
    bank_median = np.median([e.area_mm2 for e in bank.entries])
    assert bank_median / 1.25 < np.median(areas) < bank_median * 1.25
    assert min(areas) < bank_median < max(areas)


def test_a_drawn_lesion_is_one_component_without_holes():
    seg = np.zeros((80, 120), np.uint8)
    seg[ellipse(seg.shape, (40, 30), (25, 25)) & ~ellipse(seg.shape, (40, 30), (12, 12))] = 1  # a ring
    seg[ellipse(seg.shape, (40, 90), (10, 10))] = 1
    whole = LesionBank.from_cases([SimpleNamespace(case_id="a", seg=seg, spacing=(0.1, 0.1))], per_component=False)
    assert len(whole) == 1
    for seed in range(10):
        patch, info = draw_lesion(whole, "b", SPACING, np.random.default_rng(seed))
        assert ndimage.label(patch, structure=np.ones((3, 3)))[1] == 1
        assert (ndimage.binary_fill_holes(patch) == patch).all()
        assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()


def test_region_label_is_honoured(bank):
    image = np.random.default_rng(0).uniform(40, 255, (160, 200))  # no black border at all
    seg = np.zeros(image.shape, np.uint8)
    gland = ellipse(seg.shape, (80, 100), (60, 85))
    seg[gland] = 2
    seg[ellipse(seg.shape, (80, 70), (15, 15))] = 1
    allowed = erode_mm(gland, BORDER_MARGIN_MM) & ~near(seg == 1, LESION_MARGIN_MM)
    for seed in range(5):
        p = place_lesion(image, seg, SPACING, bank, "c1", seed, region_label=2)
        assert p is not None and not (p.mask & ~allowed).any()
        assert p.info["region"]["method"] == "region label" and p.info["region_label"] == 2
    with pytest.raises(SynthError, match="region label 3 does not occur"):
        place_lesion(image, seg, SPACING, bank, "c1", 0, region_label=3)


def test_no_room_returns_none_quickly(bank):
    _valid_offsets(np.ones((3, 3), bool), np.ones((1, 1), bool))  # scipy.signal's import is not the search
    start = time.perf_counter()
    tiny = fan(radius=25)  # 5 mm deep: nothing is left after the 2 mm margin
    assert not allowed_region(ultrasound(tiny), np.zeros(tiny.shape, np.uint8), SPACING).any()
    assert place_lesion(ultrasound(tiny), np.zeros(tiny.shape, np.uint8), SPACING, bank, "c0", 0) is None
    small = fan(radius=45)  # 9 mm deep: some allowed pixels, but no bank lesion fits among them
    assert allowed_region(ultrasound(small), np.zeros(small.shape, np.uint8), SPACING).any()
    assert place_lesion(ultrasound(small), np.zeros(small.shape, np.uint8), SPACING, bank, "c0", 0) is None
    sector = fan()
    full = sector.astype(np.uint8)  # an existing lesion fills the sector
    assert place_lesion(ultrasound(sector), full, SPACING, bank, "c0", 0) is None
    assert time.perf_counter() - start < 2.0


def test_valid_offsets_are_exactly_those_where_the_patch_fits():
    rng = np.random.default_rng(3)
    allowed = ndimage.binary_opening(rng.random((40, 50)) < 0.8)
    patch = ellipse((7, 5), (3, 2), (3.2, 2.2))
    expected = np.array([[not (patch & ~allowed[y:y + 7, x:x + 5]).any() for x in range(46)] for y in range(34)])
    assert expected.any() and not expected.all()
    assert (_valid_offsets(allowed, patch) == expected).all()
    assert not _valid_offsets(allowed, np.ones((41, 3), bool)).any()


def test_the_bank_keeps_each_component_with_its_area():
    seg = np.zeros((50, 60), np.uint8)
    seg[5:15, 5:25] = 1
    seg[30:45, 30:40] = 1
    seg[2:4, 50:52] = 1   # a 4-pixel speck
    seg[30:40, 5:15] = 2  # another label
    case = SimpleNamespace(case_id="x", seg=seg, spacing=(0.5, 0.2))
    bank = LesionBank.from_cases([case], label=1)
    assert [e.area_mm2 for e in bank.entries] == pytest.approx([200 * 0.1, 150 * 0.1])
    assert [e.crop.shape for e in bank.entries] == [(10, 20), (15, 10)]
    assert {e.label for e in LesionBank.from_cases([case], label=(1, 2)).entries} == {1, 2}
    assert len(LesionBank.from_cases([case], label=1, per_component=False)) == 1


def test_bank_save_load_round_trip_is_exact(tmp_path, bank):
    mixed = LesionBank(bank.entries + (LesionShape("ü-3", 2, np.eye(3, 4, dtype=bool), (0.3, 0.07), 0.063),))
    mixed.save(tmp_path / "lesion_bank.npz")
    loaded = LesionBank.load(tmp_path / "lesion_bank.npz")
    assert len(loaded) == len(mixed)
    for a, b in zip(mixed.entries, loaded.entries):
        assert (a.case_id, a.label, a.spacing, a.area_mm2) == (b.case_id, b.label, b.spacing, b.area_mm2)
        assert a.crop.dtype == b.crop.dtype == bool and (a.crop == b.crop).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lesion_bank.npz"]


def test_bank_file_errors(tmp_path):
    with pytest.raises(SynthError, match="does not exist"):
        LesionBank.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(SynthError, match="is not a lesion bank"):
        LesionBank.load(tmp_path / "other.npz")


def test_impossible_inputs_raise(scene, bank):
    image, seg, _ = scene
    with pytest.raises(SynthError, match="bank is empty"):
        place_lesion(image, seg, SPACING, LesionBank(()), "c0", 0)
    with pytest.raises(SynthError, match="no shape of label 5"):
        place_lesion(image, seg, SPACING, bank, "c0", 0, label=5)
    with pytest.raises(SynthError, match="2D image"):
        place_lesion(image[None], seg, SPACING, bank, "c0", 0)
    with pytest.raises(SynthError, match="differs from image shape"):
        place_lesion(image, seg[:-1], SPACING, bank, "c0", 0)
    with pytest.raises(SynthError, match="2D spacing"):
        place_lesion(image, seg, (1.0, 0.2, 0.2), bank, "c0", 0)
    with pytest.raises(SynthError, match="no lesion of label 1"):
        LesionBank.from_cases([SimpleNamespace(case_id="e", seg=np.zeros((9, 9), int), spacing=(1, 1))])
    with pytest.raises(SynthError, match="is 2D"):
        LesionBank.from_cases([SimpleNamespace(case_id="v", seg=np.ones((2, 9, 9), int), spacing=(1, 1, 1))])
