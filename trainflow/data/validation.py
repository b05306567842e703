"""Checking and normalising a raw split: its shape, pixel dtype and labels once, before its pixels
are read, then its pixels chunk by chunk as they stream past."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainflow.data.raw import RawSplit
from trainflow.errors import DataSourceError

MAX_PIXEL_VALUE = 255
# Integer and float dtypes by kind: numpy counts timedelta64 as an integer type.
INTEGER_KINDS = "iu"
FLOAT_KIND = "f"


@dataclass(frozen=True)
class CheckedSplit:
    """A split whose shape, pixel dtype and labels passed the checks: its images' shape (N, H, W),
    or (N, H, W, C) for C channels (one channel counts as none), the dtype its pixels normalise to
    (uint8 for integer pixels, float32 for float ones) and its labels, int64 0 or more."""

    origin: str
    shape: tuple[int, ...]
    pixel_dtype: np.dtype
    labels: np.ndarray


def check_split(split: RawSplit) -> CheckedSplit:
    """Check everything about `split` that its pixels' values do not decide; the pixels are checked
    by `normalised_pixels`, chunk by chunk."""
    shape, labels, origin = split.shape, split.labels, split.origin
    if len(shape) == 4 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (3, 4):
        raise DataSourceError(
            f"{origin}: images have shape {shape}; expected (count, height, width) or "
            "(count, height, width, channels)"
        )
    if labels.ndim != 1:
        raise DataSourceError(f"{origin}: labels have shape {labels.shape}; expected (count,)")
    if shape[0] != len(labels):
        raise DataSourceError(f"{origin}: {shape[0]} images but {len(labels)} labels")
    if shape[0] == 0:
        raise DataSourceError(f"{origin}: no examples")
    if 0 in shape[1:]:
        raise DataSourceError(
            f"{origin}: images have shape {shape}; an image needs a height and a width of "
            "at least one pixel (and one channel at least)"
        )
    if split.pixel_dtype.kind in INTEGER_KINDS:
        pixel_dtype = np.dtype(np.uint8)
    elif split.pixel_dtype.kind == FLOAT_KIND:
        pixel_dtype = np.dtype(np.float32)
    else:
        raise DataSourceError(
            f"{origin}: pixels have dtype {split.pixel_dtype}; expected integer or float"
        )
    return CheckedSplit(origin, shape, pixel_dtype, _checked_labels(labels, origin))


def normalised_pixels(images: np.ndarray, split: CheckedSplit, pixel_dtype: np.dtype) -> np.ndarray:
    """One chunk of `split`'s images, checked and normalised: integer pixels must lie in 0..255
    and stay 8-bit (uint8), so that a model that rescales its input itself can be fed the source's
    values; float pixels must lie in [0, 1] (float32). With `pixel_dtype` float32, 8-bit pixels
    become float32 in [0, 1] too (the splits of a source that mixes them must mean the same)."""
    images = images.reshape(len(images), *split.shape[1:])  # one channel squeezed
    if split.pixel_dtype == np.uint8:
        # 8-bit pixels cannot leave the range: the check would cost two passes over each chunk.
        if images.dtype != np.uint8 and (images.min() < 0 or images.max() > MAX_PIXEL_VALUE):
            raise DataSourceError(
                f"{split.origin}: integer pixels must lie in 0..{MAX_PIXEL_VALUE}"
            )
        pixels = images.astype(np.uint8, copy=False)  # already 8-bit: no copy
        return unit_pixels(pixels) if pixel_dtype == np.float32 else pixels
    if not np.isfinite(images).all():
        raise DataSourceError(f"{split.origin}: pixels contain NaN or infinite values")
    if images.min() < 0 or images.max() > 1:
        raise DataSourceError(
            f"{split.origin}: float pixels must lie in [0, 1]; store integers 0..255 or scale "
            "them first"
        )
    return images.astype(np.float32, copy=False)


def unit_pixels(images: np.ndarray) -> np.ndarray:
    """Checked pixels as float32 in [0, 1]: 8-bit ones divided by 255."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(MAX_PIXEL_VALUE)
    return images


def _checked_labels(labels: np.ndarray, origin: str) -> np.ndarray:
    if labels.dtype.kind == FLOAT_KIND:
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)):
            raise DataSourceError(f"{origin}: labels must be whole numbers")
    elif labels.dtype.kind not in INTEGER_KINDS:
        raise DataSourceError(f"{origin}: labels have dtype {labels.dtype}; expected integers")
    if labels.min() < 0:
        raise DataSourceError(
            f"{origin}: labels range {labels.min()}..{labels.max()}; expected class numbers 0, 1, "
            "2 and so on"
        )
    return labels.astype(np.int64)
