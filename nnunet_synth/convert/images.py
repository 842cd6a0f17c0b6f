"""Reading 2D source images and masks, and writing nnU-Net cases losslessly.

Reading goes through Pillow, which decodes every format these datasets ship in
(JPEG, PNG, BMP, GIF, TIFF). Writing uses PNG for 2D (nnU-Net's
NaturalImage2DIO reads it back) and NIfTI through SimpleITK for 3D, so a lossy
source (JPEG) is decoded once and never re-encoded lossily.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nnunet_synth.convert.problems import CaseProblem

LOSSY_SUFFIXES = (".jpg", ".jpeg")

# A lossy (JPEG) mask is thresholded at half its value range. JPEG ringing
# leaves only a thin band of intermediate values along edges; when more than
# this fraction of all pixels lies in the middle of the range, the file is not
# a mask at all (for example an image saved under a mask's name).
LOSSY_MID_RANGE_LIMIT = 0.05


def is_lossy(path) -> bool:
    return str(path).lower().endswith(LOSSY_SUFFIXES)


def _open(path):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise CaseProblem(path, "file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CaseProblem(path, f"unreadable image ({type(e).__name__}: {e})") from None
    return img


# In a JPEG of a gray image, chroma subsampling leaves channel differences of a few grey levels.
JPEG_GRAY_TOLERANCE = 8


def read_gray(path, warnings: list[str] | None = None) -> np.ndarray:
    """A grayscale-modality image as (H, W) uint8/uint16.

    Ultrasound is often stored as RGB with three equal channels; those become
    one channel unchanged. An RGB file whose channels differ (colour calipers
    or Doppler overlays) is converted with Pillow's ITU-R 601 luma transform
    and a warning is recorded, because information is lost. A JPEG whose
    channels differ by at most JPEG_GRAY_TOLERANCE is a gray image with
    compression noise: converted to luma without a warning.
    """
    img = _open(path)
    if img.mode in ("L", "I;16", "I;16B", "I;16L"):
        return np.asarray(img)
    if img.mode == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise CaseProblem(path, f"32-bit image with values outside 0..65535 ({arr.min()}..{arr.max()})")
        return arr.astype(np.uint16)
    if img.mode in ("1", "LA"):
        return np.asarray(img.convert("L"))
    if img.mode in ("P", "PA", "RGBA", "CMYK", "YCbCr"):
        img = img.convert("RGB")
    if img.mode != "RGB":
        raise CaseProblem(path, f"unsupported image mode {img.mode!r}")
    rgb = np.asarray(img)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return np.ascontiguousarray(rgb[..., 0])
    spread = int((rgb.max(-1).astype(np.int16) - rgb.min(-1)).max())
    if is_lossy(path) and spread <= JPEG_GRAY_TOLERANCE:
        return np.asarray(img.convert("L"))
    if warnings is not None:
        warnings.append("colour pixels in a grayscale image; converted to luma")
    return np.asarray(img.convert("L"))


def read_rgb(path) -> np.ndarray:
    """A colour image as (H, W, 3) uint8 (alpha dropped, palettes expanded)."""
    img = _open(path)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def read_mask_values(path) -> np.ndarray:
    """The raw values of a mask file as (H, W); equal-channel RGB masks become one channel."""
    img = _open(path)
    if img.mode == "P":
        # The palette says what a pixel means; GIF masks are often palette images.
        img = img.convert("L")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("LA", "RGBA"):
        img = img.convert(img.mode[:-1])
    arr = np.asarray(img)
    if arr.ndim == 3:
        if not ((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()):
            raise CaseProblem(path, "colour mask (the RGB channels differ); expected a single-channel mask")
        arr = arr[..., 0]
    return arr


def binarize(values: np.ndarray, path, lossy: bool | None = None) -> np.ndarray:
    """Map a mask to {0, 1} (uint8), or raise CaseProblem if it is not a binary mask.

    Lossless masks must hold 0 and at most one other value (1, 255, ...);
    anything else is anti-aliasing or a mask that was resized, and guessing a
    threshold would silently change the lesion's outline. Lossy (JPEG) masks are
    thresholded at half the value range, see LOSSY_MID_RANGE_LIMIT.
    """
    lossy = is_lossy(path) if lossy is None else lossy
    if lossy:
        top = 255 if values.dtype == np.uint8 else int(values.max())
        mid = (values > top * 0.125) & (values < top * 0.875)
        if mid.mean() > LOSSY_MID_RANGE_LIMIT:
            raise CaseProblem(path, f"not a binary mask: {mid.mean():.1%} of the pixels have mid-range values")
        return (values > top / 2).astype(np.uint8)
    present = np.unique(values)
    nonzero = present[present != 0]
    if len(nonzero) > 1:
        shown = ", ".join(str(v) for v in present[:6]) + (", ..." if len(present) > 6 else "")
        raise CaseProblem(path, f"anti-aliased or non-binary mask: {len(present)} distinct values ({shown}); "
                                f"expected 0 and one foreground value")
    return (values != 0).astype(np.uint8)


def read_mask(path) -> np.ndarray:
    return binarize(read_mask_values(path), path)


def check_same_size(image: np.ndarray, mask: np.ndarray, mask_path, image_path) -> None:
    if image.shape[:2] != mask.shape[:2]:
        raise CaseProblem(mask_path, f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image "
                                     f"{os.path.basename(str(image_path))} size {image.shape[1]}x{image.shape[0]}")


def write_png_case(folder, split: str, case_id: str, image: np.ndarray, seg: np.ndarray | None) -> None:
    """Write one 2D case: grayscale -> ``_0000.png``; RGB -> ``_0000/_0001/_0002.png``; seg -> labels.

    RGB goes into three single-channel files so that every reader (and every
    nnU-Net normalisation) sees three plain channels.
    """
    from skimage import io

    folder = Path(folder)
    channels = [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[-1])]
    for c, channel in enumerate(channels):
        io.imsave(folder / f"images{split}" / f"{case_id}_{c:04d}.png", np.ascontiguousarray(channel),
                  check_contrast=False)
    if seg is not None:
        io.imsave(folder / f"labels{split}" / f"{case_id}.png", seg.astype(np.uint8), check_contrast=False)


def write_nifti_case(folder, split: str, case_id: str, image, seg: np.ndarray | None) -> None:
    """Write one 3D case: ``image`` is a SimpleITK image; ``seg`` a (z, y, x) array on its grid."""
    import SimpleITK as sitk

    folder = Path(folder)
    sitk.WriteImage(image, str(folder / f"images{split}" / f"{case_id}_0000.nii.gz"), True)
    if seg is not None:
        seg_itk = sitk.GetImageFromArray(seg.astype(np.uint8))
        seg_itk.CopyInformation(image)
        sitk.WriteImage(seg_itk, str(folder / f"labels{split}" / f"{case_id}.nii.gz"), True)


def convert_pair(case, folder, color: bool = False) -> list[str]:
    """The per-case work of most 2D converters: one image, the union of its masks (if any).

    ``case.info``: ``image`` (path) and ``masks`` (list of paths, several are
    merged into one lesion label; ``None`` for a test case without labels).
    """
    warnings: list[str] = []
    image_path = case.info["image"]
    image = read_rgb(image_path) if color else read_gray(image_path, warnings)
    seg = None
    if case.info.get("masks") is not None:
        seg = np.zeros(image.shape[:2], dtype=np.uint8)
        for mask_path in case.info["masks"]:
            mask = read_mask(mask_path)
            check_same_size(image, mask, mask_path, image_path)
            seg |= mask
    write_png_case(folder, case.split, case.case_id, image, seg)
    return warnings
