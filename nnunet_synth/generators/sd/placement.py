"""Where a new lesion goes in a real 2D image, and what shape it has (``sd-inpaint``).

Rule (docs/lesion_placement.md): the lesion lies inside the allowed region, which
is the case's ``region_label`` (holes filled) where the dataset has one, else the
imaged region found from the image (the non-black ultrasound sector); the region
is eroded by ``border_margin_mm``, and every existing lesion (any other
foreground label), dilated by ``lesion_margin_mm``, is excluded. The shape is a
training lesion of another case from a ``LesionBank``, rescaled to an area drawn
from the bank's area distribution and deformed (rotation, area-preserving
stretch, smooth elastic warp). Margins are in millimetres through the case
spacing, 2D in nnU-Net axis order (y, x). Everything random comes from
``np.random.default_rng(seed)``.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunet_synth.errors import SynthError

# Allowed region.
BORDER_MARGIN_MM = 2.0               # distance the lesion keeps from the region's border (and the image edge)
LESION_MARGIN_MM = 2.0               # distance the lesion keeps from every existing lesion
BACKGROUND_THRESHOLD_FRACTION = 0.05  # imaged = above min + this fraction of (99th percentile - min)
BORDER_DARK_FRACTION = 0.5           # a black background exists if this fraction of the image's outer ring is dark
REGION_CLOSING_MM = 1.0              # closing radius that bridges dark speckle at the sector's edge
MAX_TRIES = 10                       # shapes drawn before giving up (each try then takes an exactly fitting position)

# Lesion bank and shape.
BANK_FILE = "lesion_bank.npz"
BANK_FORMAT = 1
MIN_SHAPE_PIXELS = 16                # smaller components are annotation specks, not shapes
AREA_JITTER_LOG_SD = 0.1             # target area = resampled bank area * exp(N(0, this))
MIN_DRAWN_PIXELS = 9                 # the target area is at least this many pixels at the target spacing
MAX_ROTATION_DEG = 15.0              # uniform in +-this
MAX_STRETCH = 0.15                   # area-preserving: y scaled by s, x by 1/s, log s uniform in +-log(1 + this)
ELASTIC_GRID_FRACTION = 0.5          # control-point distance, as a fraction of the lesion's equivalent diameter
ELASTIC_ALPHA_FRACTION = 0.05        # displacement s.d. at the control points, same unit

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class LesionShape:
    """One bank entry: a tight binary crop of a training lesion and where it came from."""

    case_id: str
    label: int
    crop: np.ndarray                 # bool (h, w)
    spacing: tuple[float, float]     # mm, (y, x), of the case the crop is from
    area_mm2: float


@dataclass(frozen=True)
class LesionBank:
    """The training set's lesion shapes, built at fit time and saved in the model folder."""

    entries: tuple[LesionShape, ...]

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def from_cases(cls, cases, label: int | tuple[int, ...] = 1, *, per_component: bool = True,
                   min_pixels: int = MIN_SHAPE_PIXELS) -> "LesionBank":
        """One entry per 8-connected component of each ``label`` (or per case and label), from
        cases with ``.case_id``, ``.seg`` (2D integer) and ``.spacing`` (mm, (y, x))."""
        from scipy import ndimage

        labels = (label,) if np.ndim(label) == 0 else tuple(label)
        entries = []
        for case in cases:
            seg = np.asarray(case.seg)
            if seg.ndim != 2:
                raise SynthError(f"case {case.case_id}: lesion placement is 2D, the mask has shape {seg.shape}")
            spacing = _spacing2d(case.spacing, f"case {case.case_id}")
            for value in labels:
                if per_component:
                    components, _ = ndimage.label(seg == value, structure=_EIGHT_CONNECTED)
                else:
                    components = (seg == value).astype(np.int32)
                for k, box in enumerate(ndimage.find_objects(components), start=1):
                    crop = components[box] == k
                    if crop.sum() >= min_pixels:
                        entries.append(LesionShape(str(case.case_id), int(value), crop, spacing,
                                                   float(crop.sum() * spacing[0] * spacing[1])))
        if not entries:
            raise SynthError(f"no lesion of label {', '.join(map(str, labels))} with at least {min_pixels} pixels "
                             f"in the {len(cases)} training case(s); nothing to draw lesion shapes from")
        return cls(tuple(entries))

    def save(self, path: str | os.PathLike) -> None:
        """Write the bank to one ``.npz`` file (atomically)."""
        path = Path(path)
        pixels = [e.crop.ravel() for e in self.entries]
        arrays = {
            "format": np.array(BANK_FORMAT),
            "pixels": np.concatenate(pixels) if pixels else np.zeros(0, bool),
            "crop_shapes": np.array([e.crop.shape for e in self.entries], dtype=np.int64).reshape(-1, 2),
            "case_ids": np.array([e.case_id for e in self.entries], dtype=str),
            "labels": np.array([e.label for e in self.entries], dtype=np.int64),
            "spacings": np.array([e.spacing for e in self.entries], dtype=np.float64).reshape(-1, 2),
            "areas_mm2": np.array([e.area_mm2 for e in self.entries], dtype=np.float64),
        }
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(partial, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LesionBank":
        """Read a bank written by ``save``; SynthError naming the file if it is missing or not a bank."""
        path = Path(path)
        if not path.is_file():
            raise SynthError(f"lesion bank {path} does not exist; refit the model (nnunet-synth fit ...)")
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["format"]) != BANK_FORMAT:
                    raise SynthError(f"lesion bank {path} has format {int(data['format'])}, "
                                     f"this version reads {BANK_FORMAT}; refit the model")
                shapes, pixels = data["crop_shapes"], data["pixels"].astype(bool)
                ends = np.cumsum([h * w for h, w in shapes]).astype(int)
                crops = np.split(pixels, ends[:-1]) if len(ends) else []
                return cls(tuple(
                    LesionShape(str(c), int(lb), crop.reshape(tuple(int(s) for s in shape)),
                                (float(sp[0]), float(sp[1])), float(a))
                    for c, lb, crop, shape, sp, a in zip(data["case_ids"], data["labels"], crops, shapes,
                                                         data["spacings"], data["areas_mm2"])))
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
            raise SynthError(f"{path} is not a lesion bank ({type(e).__name__}: {e}); refit the model") from None


@dataclass
class Placement:
    """A new lesion in the source image's grid and everything that made it."""

    mask: np.ndarray                      # bool (y, x), the new lesion only
    bbox: tuple[int, int, int, int]       # (y0, x0, y1, x1), half-open
    centre: tuple[float, float]           # centroid of ``mask``, pixels (y, x)
    shape_case_id: str                    # the case the shape was taken from
    area_mm2: float                       # of ``mask``
    label: int
    info: dict = field(default_factory=dict)  # JSON-friendly, for the manifest


def imaged_region(image2d: np.ndarray, spacing, *, border_margin_mm: float = BORDER_MARGIN_MM,
                  threshold_fraction: float = BACKGROUND_THRESHOLD_FRACTION) -> np.ndarray:
    """bool (y, x): the non-black sector of ``image2d`` (or the whole image), eroded by the margin."""
    image2d = _image2d(image2d)
    spacing = _spacing2d(spacing)
    region, _ = _sector(image2d, spacing, threshold_fraction)
    return _erode_mm(region, spacing, border_margin_mm)


def allowed_region(image2d: np.ndarray, seg: np.ndarray, spacing, *, region_label: int | None = None,
                   border_margin_mm: float = BORDER_MARGIN_MM,
                   lesion_margin_mm: float = LESION_MARGIN_MM) -> np.ndarray:
    """bool (y, x): where a new lesion's pixels may lie (the rule of the module docstring)."""
    allowed, _ = _allowed(_image2d(image2d), np.asarray(seg), _spacing2d(spacing), region_label,
                          border_margin_mm, lesion_margin_mm)
    return allowed


def draw_lesion(bank: LesionBank, source_case_id: str, spacing, rng: np.random.Generator, *,
                label: int | None = None) -> tuple[np.ndarray, dict]:
    """A deformed bank shape (tight bool patch at ``spacing``) of another case than the source, and its parameters.

    The shape is drawn uniformly from the bank's entries of ``label`` (any label if
    None) that belong to other cases; the target area independently from the areas
    of all entries of ``label`` (the source's included), times a log-normal jitter.
    Only if the bank holds shapes of the source case alone are they used, and
    ``info["shape_from_source"]`` says so.
    """
    spacing = _spacing2d(spacing)
    pool = _pool(bank, label)
    others = [i for i in pool if bank.entries[i].case_id != str(source_case_id)]
    index = int((others or pool)[rng.integers(len(others or pool))])
    shape = bank.entries[index]
    resampled = float(bank.entries[int(pool[rng.integers(len(pool))])].area_mm2)
    jitter = float(np.exp(rng.normal(0.0, AREA_JITTER_LOG_SD)))
    target = max(resampled * jitter, MIN_DRAWN_PIXELS * spacing[0] * spacing[1])
    rotation = float(rng.uniform(-1, 1) * MAX_ROTATION_DEG)
    stretch = float(np.exp(rng.uniform(-1, 1) * np.log1p(MAX_STRETCH)))
    patch, warp = _warp(shape, spacing, target, rotation, stretch, rng)
    info = {"shape_index": index, "shape_case_id": shape.case_id, "shape_label": shape.label,
            "shape_from_source": not others, "shape_area_mm2": _round(shape.area_mm2),
            "resampled_area_mm2": _round(resampled), "area_jitter": _round(jitter),
            "target_area_mm2": _round(target), "rotation_deg": _round(rotation), "stretch": _round(stretch),
            **warp, "area_mm2": _round(patch.sum() * spacing[0] * spacing[1])}
    if not others:
        info["note"] = f"the bank holds shapes of case {source_case_id} only; one of its own was used"
    return patch, info


def place_lesion(source_image2d: np.ndarray, source_seg: np.ndarray, spacing, bank: LesionBank,
                 source_case_id: str, seed: int, *, region_label: int | None = None, label: int = 1,
                 border_margin_mm: float = BORDER_MARGIN_MM, lesion_margin_mm: float = LESION_MARGIN_MM,
                 max_tries: int = MAX_TRIES) -> Placement | None:
    """A new lesion of ``label`` inside the allowed region, or None if ``max_tries`` shapes find no room.

    Each try draws a shape (``draw_lesion``) and, if it fits anywhere, a position
    uniformly among all positions where every pixel of it lies in the allowed region.
    """
    image2d = _image2d(source_image2d)
    seg = np.asarray(source_seg)
    if seg.shape != image2d.shape:
        raise SynthError(f"case {source_case_id}: mask shape {seg.shape} differs from image shape {image2d.shape}")
    spacing = _spacing2d(spacing, f"case {source_case_id}")
    if max_tries < 1:
        raise SynthError(f"max_tries must be at least 1, got {max_tries}")
    _pool(bank, label)
    if region_label is not None and region_label == label:
        raise SynthError(f"region label {region_label} is the lesion label; the region must be another label")
    if region_label is not None and not (seg == region_label).any():
        raise SynthError(f"case {source_case_id}: region label {region_label} does not occur in the source mask "
                         f"(its labels: {', '.join(map(str, np.unique(seg)))})")
    allowed, region_info = _allowed(image2d, seg, spacing, region_label, border_margin_mm, lesion_margin_mm)
    n_allowed = int(allowed.sum())
    if n_allowed == 0:
        return None
    rng = np.random.default_rng(seed)
    for attempt in range(max_tries):
        patch, shape_info = draw_lesion(bank, source_case_id, spacing, rng, label=label)
        valid = _valid_offsets(allowed, patch)
        candidates = np.flatnonzero(valid)
        if len(candidates) == 0:
            continue
        y0, x0 = np.unravel_index(candidates[rng.integers(len(candidates))], valid.shape)
        y0, x0 = int(y0), int(x0)
        mask = np.zeros(seg.shape, dtype=bool)
        mask[y0:y0 + patch.shape[0], x0:x0 + patch.shape[1]] = patch
        bbox = (y0, x0, y0 + patch.shape[0], x0 + patch.shape[1])
        centre = tuple(_round(c) for c in np.argwhere(mask).mean(0))
        area = _round(mask.sum() * spacing[0] * spacing[1])
        info = {"method": "bank shape in allowed region", "seed": int(seed), "label": int(label),
                "region_label": None if region_label is None else int(region_label),
                "border_margin_mm": float(border_margin_mm), "lesion_margin_mm": float(lesion_margin_mm),
                "max_tries": int(max_tries), "try": attempt,
                "region": region_info, "allowed_pixels": n_allowed, "valid_positions": int(len(candidates)),
                "bbox": list(bbox), "centre": list(centre), "area_mm2": area, "shape": shape_info}
        return Placement(mask, bbox, centre, shape_info["shape_case_id"], area, int(label), info)
    return None


def _allowed(image2d, seg, spacing, region_label, border_margin_mm, lesion_margin_mm) -> tuple[np.ndarray, dict]:
    from scipy import ndimage

    if border_margin_mm < 0 or lesion_margin_mm < 0:
        raise SynthError(f"margins must not be negative (border {border_margin_mm} mm, lesion {lesion_margin_mm} mm)")
    if region_label is not None:
        # Lesions inside the region are holes in it; filling them keeps the border margin off them.
        region = ndimage.binary_fill_holes(seg == region_label)
        info = {"method": "region label", "region_label": int(region_label)}
        lesions = (seg != 0) & (seg != region_label)
    else:
        region, info = _sector(image2d, spacing, BACKGROUND_THRESHOLD_FRACTION)
        lesions = seg != 0
    allowed = _erode_mm(region, spacing, border_margin_mm)
    if lesions.any():
        allowed &= ndimage.distance_transform_edt(~lesions, sampling=spacing) > lesion_margin_mm
    info["region_pixels"] = int(region.sum())
    return allowed, info


def _sector(image2d: np.ndarray, spacing, threshold_fraction: float) -> tuple[np.ndarray, dict]:
    """The imaged region before the margin, and how it was found."""
    from scipy import ndimage

    if not 0 <= threshold_fraction < 1:
        raise SynthError(f"threshold fraction must be in [0, 1), got {threshold_fraction}")
    low, high = float(image2d.min()), float(np.percentile(image2d, 99))
    whole = np.ones(image2d.shape, dtype=bool)
    if high <= low:
        return whole, {"method": "whole image", "reason": "the image is constant"}
    threshold = low + threshold_fraction * (high - low)
    bright = image2d > threshold
    ring = np.concatenate([bright[0], bright[-1], bright[1:-1, 0], bright[1:-1, -1]])
    dark = float(1.0 - ring.mean())
    info = {"threshold": _round(threshold), "background_level": _round(low), "dark_border_fraction": _round(dark)}
    if dark < BORDER_DARK_FRACTION:
        return whole, {"method": "whole image", "reason": "no black border", **info}
    # Closing with a disc of REGION_CLOSING_MM, by distance transforms (exact in mm, fast); the
    # padding lets the dilation pass the image edge, so a sector reaching the edge is not eaten.
    pad = [int(np.ceil(REGION_CLOSING_MM / s)) + 1 for s in spacing]
    padded = np.pad(bright, [(p, p) for p in pad])
    dilated = ndimage.distance_transform_edt(~padded, sampling=spacing) <= REGION_CLOSING_MM
    closed = ndimage.distance_transform_edt(dilated, sampling=spacing) > REGION_CLOSING_MM
    region = ndimage.binary_fill_holes(_largest_component(closed[pad[0]:-pad[0], pad[1]:-pad[1]]))
    return region, {"method": "image sector", "closing_mm": REGION_CLOSING_MM, **info}


def _erode_mm(region: np.ndarray, spacing, margin_mm: float) -> np.ndarray:
    """Pixels more than ``margin_mm`` from every pixel outside ``region`` (outside the image counts)."""
    from scipy import ndimage

    if margin_mm < 0:
        raise SynthError(f"border margin must not be negative, got {margin_mm} mm")
    if margin_mm == 0 or not region.any():
        return region.copy()
    distance = ndimage.distance_transform_edt(np.pad(region, 1), sampling=spacing)[1:-1, 1:-1]
    return distance > margin_mm


def _valid_offsets(allowed: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """bool: top-left offsets at which every pixel of ``patch`` lies in ``allowed``.

    This is the binary erosion of ``allowed`` by the patch as structuring element,
    computed as a count of forbidden pixels under the patch by FFT: the counts are
    integers far below float precision, so ``< 0.5`` is exact, and it stays fast for
    lesions of thousands of pixels where ``ndimage.binary_erosion`` takes seconds.
    """
    from scipy.signal import fftconvolve

    if patch.shape[0] > allowed.shape[0] or patch.shape[1] > allowed.shape[1] or patch.sum() > allowed.sum():
        return np.zeros((0, 0), dtype=bool)
    forbidden = fftconvolve((~allowed).astype(np.float64), patch[::-1, ::-1].astype(np.float64), mode="valid")
    return forbidden < 0.5


def _warp(shape: LesionShape, spacing, target_area: float, rotation_deg: float, stretch: float,
          rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """``shape`` resampled to ``spacing``, scaled to ``target_area`` and deformed; one component, no holes."""
    from scipy import ndimage

    source_spacing = np.asarray(shape.spacing)
    centroid_mm = np.argwhere(shape.crop).mean(0) * source_spacing
    scale = float(np.sqrt(target_area / shape.area_mm2))
    a = np.deg2rad(rotation_deg)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    forward = scale * rotation @ np.diag([stretch, 1.0 / stretch])  # source mm offsets -> output mm offsets
    diameter = 2.0 * np.sqrt(target_area / np.pi)
    grid_mm = max(ELASTIC_GRID_FRACTION * diameter, float(max(spacing)))
    alpha_mm = ELASTIC_ALPHA_FRACTION * diameter
    # Output extent: the crop's corners mapped forward, plus room for the elastic displacement.
    h, w = shape.crop.shape
    corners = (np.array([[-0.5, -0.5], [-0.5, w - 0.5], [h - 0.5, -0.5], [h - 0.5, w - 0.5]]) * source_spacing
               - centroid_mm) @ forward.T
    reach = np.abs(corners).max(0) + 4 * alpha_mm + np.asarray(spacing)
    half = np.ceil(reach / np.asarray(spacing)).astype(int)
    points_mm = (np.indices(tuple(2 * half + 1), dtype=np.float64).reshape(2, -1) - half[:, None]) \
        * np.asarray(spacing)[:, None]
    coarse = tuple(max(4, int(np.ceil(2 * r / grid_mm)) + 1) for r in reach)
    field = rng.normal(size=(2,) + coarse) * alpha_mm
    at = (points_mm + reach[:, None]) / (2 * reach[:, None]) * (np.asarray(coarse)[:, None] - 1)
    displaced = points_mm + np.stack([ndimage.map_coordinates(f, at, order=3, mode="nearest") for f in field])
    source_vox = (np.linalg.inv(forward) @ displaced + centroid_mm[:, None]) / source_spacing[:, None]
    values = ndimage.map_coordinates(shape.crop.astype(np.float32), source_vox, order=1, mode="constant", cval=0.0)
    values = values.reshape(tuple(2 * half + 1))
    info = {"scale": _round(scale), "elastic_grid_mm": _round(grid_mm), "elastic_alpha_mm": _round(alpha_mm)}
    mask = _largest_component(values > 0.5)
    if not mask.any():
        # Too thin to survive resampling: the single pixel most inside the shape stands for it.
        mask[np.unravel_index(np.argmax(values), values.shape)] = True
        info["fallback"] = "single pixel"
    mask = ndimage.binary_fill_holes(mask)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], info


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask`` (the first in scan order on ties; empty if none)."""
    from scipy import ndimage

    components, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    return components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))


def _pool(bank: LesionBank, label: int | None) -> list[int]:
    if len(bank) == 0:
        raise SynthError("the lesion bank is empty; fit the model on training cases that have lesions")
    pool = [i for i, e in enumerate(bank.entries) if label is None or e.label == label]
    if not pool:
        raise SynthError(f"the lesion bank has no shape of label {label} "
                         f"(it has label {', '.join(map(str, sorted({e.label for e in bank.entries})))})")
    return pool


def _image2d(image2d) -> np.ndarray:
    image2d = np.asarray(image2d)
    if image2d.ndim != 2:
        raise SynthError(f"lesion placement needs a 2D image (y, x), got shape {image2d.shape}; "
                         f"pass one channel, e.g. image[0]")
    return image2d.astype(np.float64, copy=False)


def _spacing2d(spacing, where: str = "spacing") -> tuple[float, float]:
    values = tuple(float(s) for s in np.ravel(spacing))
    if len(values) != 2 or min(values) <= 0:
        raise SynthError(f"{where}: lesion placement needs a 2D spacing (y, x) in mm, got {tuple(np.ravel(spacing))}")
    return values


def _round(value) -> float:
    return round(float(value), 6)
