"""Checking and normalising a raw split: shapes, dtypes, pixel ranges, labels."""

from __future__ import annotations

import numpy as np

from trainflow.data.raw import RawSplit
from trainflow.errors import DataSourceError

MAX_PIXEL_VALUE = 255
# Integer and float dtypes by kind: numpy counts timedelta64 as an integer type.
INTEGER_KINDS = "iu"
FLOAT_KIND = "f"


def normalise_split(split: RawSplit) -> tuple[np.ndarray, np.ndarray]:
    """Check one split and return its images of shape (N, H, W), or (N, H, W, C) for C channels
    (one channel counts as none: (N, H, W)), and int64 labels 0 or more.

    Integer pixels must lie in 0..255 and stay 8-bit (uint8), so that a model that rescales its
    input itself can be fed the source's values; float pixels must lie in [0, 1] (float32).
    """
    images, labels, origin = split.images, split.labels, split.origin
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4):
        raise DataSourceError(
            f"{origin}: images have shape {images.shape}; expected (count, height, width) or "
            "(count, height, width, channels)"
        )
    if labels.ndim != 1:
        raise DataSourceError(f"{origin}: labels have shape {labels.shape}; expected (count,)")
    if len(images) != len(labels):
        raise DataSourceError(f"{origin}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DataSourceError(f"{origin}: no examples")
    if 0 in images.shape[1:]:
        raise DataSourceError(
            f"{origin}: images have shape {images.shape}; an image needs a height and a width of "
            "at least one pixel (and one channel at least)"
        )
    return _normalised_pixels(images, origin), _checked_labels(labels, origin)


def _normalised_pixels(images: np.ndarray, origin: str) -> np.ndarray:
    if images.dtype.kind in INTEGER_KINDS:
        if images.min() < 0 or images.max() > MAX_PIXEL_VALUE:
            raise DataSourceError(f"{origin}: integer pixels must lie in 0..{MAX_PIXEL_VALUE}")
        return images.astype(np.uint8, copy=False)  # already 8-bit: no copy
    if images.dtype.kind != FLOAT_KIND:
        raise DataSourceError(
            f"{origin}: pixels have dtype {images.dtype}; expected integer or float"
        )
    if not np.isfinite(images).all():
        raise DataSourceError(f"{origin}: pixels contain NaN or infinite values")
    if images.min() < 0 or images.max() > 1:
        raise DataSourceError(
            f"{origin}: float pixels must lie in [0, 1]; store integers 0..255 or scale them first"
        )
    return images.astype(np.float32)


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
