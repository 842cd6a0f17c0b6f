"""From a 2D image to the model's square resolution and back, without distortion.

A :class:`Frame` is a square window of the source image (it may reach past the
image's border; that part is padded) and the resolution the model works at.
``to_model`` crops and pads the window and resizes it to the resolution;
``from_model`` resizes back to the window's side and drops the padding, which
gives an array the size of the window's part inside the image; ``paste``
writes such an array back into the image where a mask says so. Nothing is
stretched: both axes are scaled by the same factor.

Resizing is ``skimage.transform.resize`` (pixel-centre aligned): order 1
(bilinear, Gaussian anti-aliasing when shrinking) for images, order 0 (nearest,
no anti-aliasing) for masks. With order 0 a mask survives the round trip
exactly when the window's side equals the resolution or divides it.

Arrays are ``(..., H, W)``: leading axes (channels) are carried along.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), half-open, in pixels


@dataclass(frozen=True)
class Frame:
    """A square window ``[y0, y1) x [x0, x1)`` of an image of ``image_shape``, shown to the model at ``resolution``."""
    y0: int
    x0: int
    y1: int
    x1: int
    resolution: int
    image_shape: tuple[int, int]

    def __post_init__(self):
        if self.y1 - self.y0 != self.x1 - self.x0 or self.y1 <= self.y0:
            raise ValueError(f"a frame is a non-empty square, got box {self.box}")
        if self.resolution < 1:
            raise ValueError(f"resolution must be positive, got {self.resolution}")
        h, w = self.image_shape
        if self.y1 <= 0 or self.x1 <= 0 or self.y0 >= h or self.x0 >= w:
            raise ValueError(f"box {self.box} does not overlap the image of shape {self.image_shape}")

    @property
    def box(self) -> Box:
        return self.y0, self.x0, self.y1, self.x1

    @property
    def side(self) -> int:
        return self.y1 - self.y0

    @property
    def inside(self) -> Box:
        """The window clipped to the image: where ``from_model``'s output belongs."""
        h, w = self.image_shape
        return max(self.y0, 0), max(self.x0, 0), min(self.y1, h), min(self.x1, w)

    @property
    def padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Pixels of the window past the image: ``((top, bottom), (left, right))``."""
        iy0, ix0, iy1, ix1 = self.inside
        return (iy0 - self.y0, self.y1 - iy1), (ix0 - self.x0, self.x1 - ix1)


def full_frame(image_shape: tuple[int, int], resolution: int) -> Frame:
    """The whole image, centred in a square of side ``max(H, W)`` (the short axis padded)."""
    h, w = image_shape
    side = max(h, w)
    y0, x0 = -((side - h) // 2), -((side - w) // 2)
    return Frame(y0, x0, y0 + side, x0 + side, resolution, (h, w))


def mask_bbox(mask: np.ndarray) -> Box:
    """The smallest box holding every nonzero pixel of a 2D mask."""
    rows, cols = np.nonzero(np.asarray(mask))
    if rows.size == 0:
        raise ValueError("the mask is empty; it has no bounding box")
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def square_box_around(bbox: Box, image_shape: tuple[int, int], context_factor: float, min_side: int, *,
                      resolution: int) -> Frame:
    """A square window around ``bbox`` with context, shown at ``resolution``.

    The side is ``max(min_side, ceil(context_factor * longest side of bbox))``.
    Along an axis where the image is at least that long, the window is centred
    on the box and shifted inside the image at its borders (real context
    rather than padding); along a shorter axis it is centred on the image and
    padded. The box always lies inside the window.
    """
    y0, x0, y1, x1 = bbox
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"empty box {bbox}")
    if context_factor < 1:
        raise ValueError(f"context_factor must be at least 1 (the window holds the box), got {context_factor}")
    if min_side < 1:
        raise ValueError(f"min_side must be positive, got {min_side}")
    side = max(int(min_side), math.ceil(context_factor * max(y1 - y0, x1 - x0)))

    def start(lo: int, hi: int, n: int) -> int:
        if side >= n:
            return -((side - n) // 2)
        return min(max(math.floor((lo + hi - side) / 2 + 0.5), 0), n - side)

    top, left = start(y0, y1, image_shape[0]), start(x0, x1, image_shape[1])
    return Frame(top, left, top + side, left + side, resolution, tuple(image_shape))


def _resize(array: np.ndarray, side: int, order: int) -> np.ndarray:
    from skimage.transform import resize

    if array.shape[-1] == side:
        return array
    source = array.astype(np.uint8) if array.dtype == bool else array
    out = resize(source, array.shape[:-2] + (side, side), order=order, mode="edge", preserve_range=True,
                 anti_aliasing=order > 0 and array.shape[-1] > side)
    return _cast(out, array.dtype, order)


def _cast(array: np.ndarray, dtype: np.dtype, order: int) -> np.ndarray:
    """Nearest keeps the input's values and dtype; interpolation gives at least float32."""
    if order == 0:
        return array.astype(dtype)
    return array.astype(np.result_type(dtype, np.float32), copy=False)


def _check_spatial(array: np.ndarray, shape: tuple[int, int], what: str) -> None:
    if array.ndim < 2 or tuple(array.shape[-2:]) != tuple(shape):
        raise ValueError(f"{what} has shape {array.shape}, expected (..., {shape[0]}, {shape[1]})")


def to_model(image: np.ndarray, frame: Frame, order: int, fill: float = 0) -> np.ndarray:
    """The frame's window of ``image (..., H, W)`` at ``(..., resolution, resolution)``; padding is ``fill``."""
    image = np.asarray(image)
    _check_spatial(image, frame.image_shape, "the image")
    iy0, ix0, iy1, ix1 = frame.inside
    window = np.pad(image[..., iy0:iy1, ix0:ix1], [(0, 0)] * (image.ndim - 2) + list(frame.padding),
                    mode="constant", constant_values=fill)
    return _cast(_resize(window, frame.resolution, order), image.dtype, order)


def from_model(array: np.ndarray, frame: Frame, order: int) -> np.ndarray:
    """``(..., resolution, resolution)`` back to the frame's window, without the padding: ``(..., inside h, inside w)``."""
    array = np.asarray(array)
    _check_spatial(array, (frame.resolution, frame.resolution), "the model's array")
    window = _resize(array, frame.side, order)
    (top, _), (left, _) = frame.padding
    iy0, ix0, iy1, ix1 = frame.inside
    return window[..., top:top + iy1 - iy0, left:left + ix1 - ix0]


def paste(into: np.ndarray, patch: np.ndarray, frame: Frame, where_mask: np.ndarray) -> np.ndarray:
    """Write ``patch`` (``from_model``'s output) into ``into`` in place, only where ``where_mask`` is True; returns ``into``.

    ``where_mask`` is a bool array of the patch's spatial shape; every other
    pixel of ``into`` is left exactly as it was.
    """
    patch, where_mask = np.asarray(patch), np.asarray(where_mask)
    _check_spatial(into, frame.image_shape, "the target")
    iy0, ix0, iy1, ix1 = frame.inside
    _check_spatial(patch, (iy1 - iy0, ix1 - ix0), "the patch")
    if where_mask.dtype != bool or where_mask.shape != patch.shape[-2:]:
        raise ValueError(f"where_mask must be bool of shape {patch.shape[-2:]}, got {where_mask.dtype} {where_mask.shape}")
    if not np.can_cast(patch.dtype, into.dtype, "same_kind"):
        raise ValueError(f"cannot paste {patch.dtype} into {into.dtype} without losing values")
    region = into[..., iy0:iy1, ix0:ix1]
    region[..., where_mask] = patch[..., where_mask]
    return into
