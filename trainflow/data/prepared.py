"""Prepared data on disk: each split as Parquet, and the digest that identifies a source."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from trainflow.contract import PixelRange
from trainflow.data.parquet import read_parquet_split
from trainflow.data.raw import RawSplit
from trainflow.data.validation import unit_pixels


def read_split(path: Path, pixels: PixelRange = "unit") -> tuple[np.ndarray, np.ndarray]:
    """Read a split that `write_split` wrote, as float32 images (N, H, W) or (N, H, W, C) in the
    range `pixels` (`unit`: [0, 1]; `raw`: the source's values, 0..255 for 8-bit pixels) and
    int64 labels."""
    split = read_parquet_split(path)
    images = unit_pixels(split.images) if pixels == "unit" else split.images
    return images.astype(np.float32, copy=False), split.labels.astype(np.int64, copy=False)


def sha256_of_arrays(raw: dict[str, RawSplit]) -> str:
    """One sha256 over the split names, shapes, dtypes and bytes of in-memory arrays."""
    digest = hashlib.sha256()
    for name in sorted(raw):
        for array in (raw[name].images, raw[name].labels):
            digest.update(f"{name}{array.shape}{array.dtype}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
