"""Prepared data on disk: each split as Parquet, and the digest that identifies a source."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainflow.data.readers import (
    IMAGE_COLUMN,
    IMAGE_SHAPE_METADATA_KEY,
    LABEL_COLUMN,
    RawSplit,
    read_parquet_split,
)


def write_split(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one split as Parquet: `image` (fixed-size list of float32 pixels) and `label` (int64)."""
    height, width = images.shape[1:]
    pixels = pa.FixedSizeListArray.from_arrays(
        pa.array(images.reshape(-1), type=pa.float32()), height * width
    )
    table = pa.table({IMAGE_COLUMN: pixels, LABEL_COLUMN: pa.array(labels, type=pa.int64())})
    table = table.replace_schema_metadata({IMAGE_SHAPE_METADATA_KEY: f"{height},{width}"})
    pq.write_table(table, path)


def read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a split that `write_split` wrote, as float32 images (N, H, W) and int64 labels."""
    split = read_parquet_split(path)
    return split.images.astype(np.float32, copy=False), split.labels.astype(np.int64, copy=False)


def sha256_of_arrays(raw: dict[str, RawSplit]) -> str:
    """One sha256 over the split names, shapes, dtypes and bytes of in-memory arrays."""
    digest = hashlib.sha256()
    for name in sorted(raw):
        for array in (raw[name].images, raw[name].labels):
            digest.update(f"{name}{array.shape}{array.dtype}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
