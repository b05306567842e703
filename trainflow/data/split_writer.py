"""Writing the prepared splits as Parquet, chunk by chunk, in row groups sized for streaming."""

from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainflow.data.parquet import (
    IMAGE_COLUMN,
    IMAGE_SHAPE_METADATA_KEY,
    LABEL_COLUMN,
    PIXEL_TYPE_METADATA_KEY,
)
from trainflow.data.raw import RawSplit
from trainflow.data.splitting import SplitPlan, stream_splits
from trainflow.paths import PREPARED_SPLITS, DataPaths

# Pixels per row group of a prepared split: small enough that a reader holds one row group (or a
# few) in memory at a time, large enough that a file has few of them.
PREPARED_ROW_GROUP_BYTES = 4 * 2**20


# Pixels per record batch handed to the Parquet writer: it encodes a table one chunk at a time,
# with buffers (levels, 32-bit values) many times the chunk's size; for a whole row group at once
# they would take 60 MiB.
WRITE_BATCH_BYTES = 2**18


def row_group_rows(image_shape: tuple[int, ...], pixel_dtype: np.dtype) -> int:
    """The rows of a prepared split's row groups: as many images as PREPARED_ROW_GROUP_BYTES hold,
    one at least."""
    image_bytes = math.prod(image_shape) * np.dtype(pixel_dtype).itemsize
    return max(1, PREPARED_ROW_GROUP_BYTES // image_bytes)


def write_splits(raw: dict[str, RawSplit], plan: SplitPlan, directory: DataPaths) -> None:
    """Write the prepared splits that `plan` decides, in one pass over the raw splits' images."""
    with ExitStack() as stack:
        writers = {
            name: stack.enter_context(
                SplitWriter(directory.split(name), plan.image_shape, plan.pixel_dtype)
            )
            for name in PREPARED_SPLITS
        }
        stream_splits(raw, plan, lambda name, images, labels: writers[name].write(images, labels))


class SplitWriter:
    """One prepared split, written to a Parquet file chunk by chunk: `image` (fixed-size binary:
    each image's pixels in row-major order, uint8 as an 8-bit source gave them, float32 in [0, 1]
    otherwise, little-endian), `label` (int64), and in the schema metadata the image shape ("H,W"
    or "H,W,C") and the pixels' type ("uint8" or "float32"). Binary, not a list of pixels: pyarrow
    reads a list column at about 125 MB/s, its levels decoded pixel by pixel, and the same bytes
    as fixed-size binary at several GB/s.

    Every row group but the last of the file has exactly `row_group_rows` rows (the last has 1 to
    `row_group_rows`), so that a reader finds row i in row group i // row_group_rows and can read
    the file a row group at a time. Rows are held back until they fill a row group.
    """

    def __init__(self, path: Path, image_shape: tuple[int, ...], pixel_dtype: np.dtype) -> None:
        self.row_group_rows = row_group_rows(image_shape, pixel_dtype)
        self._pixel_dtype = np.dtype(np.uint8 if pixel_dtype == np.uint8 else np.float32)
        self._image_type = pa.binary(math.prod(image_shape) * self._pixel_dtype.itemsize)
        self._schema = pa.schema(
            [pa.field(IMAGE_COLUMN, self._image_type), pa.field(LABEL_COLUMN, pa.int64())],
            metadata={
                IMAGE_SHAPE_METADATA_KEY: ",".join(map(str, image_shape)),
                PIXEL_TYPE_METADATA_KEY: self._pixel_dtype.name,
            },
        )
        self._writer = pq.ParquetWriter(path, self._schema)
        self._held: list[tuple[np.ndarray, np.ndarray]] = []
        self._held_rows = 0

    def write(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Add rows (normalised images and their labels) after those written so far."""
        self._held.append((images, labels))
        self._held_rows += len(labels)
        if self._held_rows >= self.row_group_rows:
            self._write_held(full_row_groups_only=True)

    def close(self) -> None:
        """Write the rows held back (the last row group) and the file's footer."""
        if self._held_rows:
            self._write_held(full_row_groups_only=False)
        self._writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error_type is None:
            self.close()
        else:  # the file is discarded: only release it
            self._writer.close()

    def _write_held(self, full_row_groups_only: bool) -> None:
        rows = self._held_rows
        if full_row_groups_only:
            rows -= rows % self.row_group_rows
        batches, remaining = [], rows
        while remaining:
            images, labels = self._held[0]
            taken = min(remaining, len(labels))
            batches += self._batches(images[:taken], labels[:taken])
            if taken == len(labels):
                self._held.pop(0)
            else:  # a copy: a view would hold on to all the rows written
                self._held[0] = (images[taken:].copy(), labels[taken:].copy())
            remaining -= taken
        table = pa.Table.from_batches(batches, schema=self._schema)
        self._writer.write_table(table, row_group_size=self.row_group_rows)
        self._held_rows -= rows

    def _batches(self, images: np.ndarray, labels: np.ndarray) -> list[pa.RecordBatch]:
        """The rows as record batches of WRITE_BATCH_BYTES of pixels at most, without copies."""
        step = max(1, WRITE_BATCH_BYTES // images[0].nbytes)
        return [
            pa.RecordBatch.from_arrays(
                [
                    self._packed(images[start : start + step]),
                    pa.array(labels[start : start + step], type=pa.int64()),
                ],
                schema=self._schema,
            )
            for start in range(0, len(labels), step)
        ]

    def _packed(self, images: np.ndarray) -> pa.Array:
        """Images as a fixed-size binary column of their little-endian bytes."""
        pixels = np.ascontiguousarray(images, dtype=self._pixel_dtype.newbyteorder("<"))
        return pa.FixedSizeBinaryArray.from_buffers(
            self._image_type, len(images), [None, pa.py_buffer(pixels)]
        )
