"""Prepared data on disk, read back: a split file a row group at a time, so that no reader needs the whole split in
memory: training streams windows of row groups, evaluation streams batches, the mistakes gallery
reads the few rows it shows."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainflow.contract import PixelRange
from trainflow.data.parquet import IMAGE_COLUMN, IMAGE_SHAPE_METADATA_KEY, LABEL_COLUMN
from trainflow.data.validation import unit_pixels

Examples = tuple[np.ndarray, np.ndarray]


class PreparedSplit:
    """One split as `trainflow/data/split_writer.py` writes it: images as stored (uint8 for an
    8-bit source, float32 in [0, 1] otherwise) and int64 labels, in row groups."""

    def __init__(self, path: Path) -> None:
        self.path = path
        metadata = pq.read_metadata(path)
        schema = metadata.schema.to_arrow_schema()
        shape_text = (schema.metadata or {})[IMAGE_SHAPE_METADATA_KEY].decode()
        self.image_shape = tuple(int(part) for part in shape_text.split(","))
        self.pixel_dtype = np.dtype(schema.field(IMAGE_COLUMN).type.value_type.to_pandas_dtype())
        self.rows = metadata.num_rows
        self.group_rows = [
            metadata.row_group(index).num_rows for index in range(metadata.num_row_groups)
        ]

    @property
    def image_bytes(self) -> int:
        """Bytes of one image as stored (and as held in memory before scaling)."""
        return math.prod(self.image_shape) * self.pixel_dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of all the split's images as stored."""
        return self.rows * self.image_bytes

    def row_groups(self, indices: list[int]) -> Examples:
        """The rows of the row groups `indices`, in that order."""
        table = pq.ParquetFile(self.path).read_row_groups(indices, use_threads=False)
        return self._examples(table)

    def batches(self, batch_rows: int) -> Iterator[Examples]:
        """All rows in file order, `batch_rows` at a time (the last batch may be smaller)."""
        with pq.ParquetFile(self.path) as parquet:
            for batch in parquet.iter_batches(batch_size=batch_rows, use_threads=False):
                yield self._examples(pa.Table.from_batches([batch]))

    def labels(self) -> np.ndarray:
        """Every label, without reading a pixel."""
        return pq.read_table(self.path, columns=[LABEL_COLUMN]).column(LABEL_COLUMN).to_numpy()

    def images_at(self, rows: np.ndarray) -> np.ndarray:
        """The images of the given row numbers, in that order; reads only their row groups."""
        starts = np.cumsum([0, *self.group_rows])
        groups = np.searchsorted(starts, rows, side="right") - 1
        images = np.empty((len(rows), *self.image_shape), dtype=self.pixel_dtype)
        for group in np.unique(groups):
            group_images, _ = self.row_groups([int(group)])
            chosen = np.flatnonzero(groups == group)
            images[chosen] = group_images[rows[chosen] - starts[group]]
        return images

    def read(self) -> Examples:
        """The whole split in memory."""
        return self._examples(pq.read_table(self.path, use_threads=False))

    def _examples(self, table: pa.Table) -> Examples:
        pixels = table.column(IMAGE_COLUMN).combine_chunks().flatten()
        images = pixels.to_numpy(zero_copy_only=False).reshape((table.num_rows, *self.image_shape))
        return images, table.column(LABEL_COLUMN).to_numpy()


def read_split(path: Path, pixels: PixelRange = "unit") -> Examples:
    """A whole prepared split in memory, as float32 images (N, H, W) or (N, H, W, C) in the range
    `pixels` (`unit`: [0, 1]; `raw`: the source's values, 0..255 for 8-bit pixels) and int64
    labels. For tests and benchmarks; the stages stream."""
    images, labels = PreparedSplit(path).read()
    images = unit_pixels(images) if pixels == "unit" else images
    return images.astype(np.float32, copy=False), labels
