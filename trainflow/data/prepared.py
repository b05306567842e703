"""Prepared data read back where it lies: a split file a row group at a time, so that no reader
needs the whole split in memory (training streams windows of row groups, evaluation streams
batches, the mistakes gallery reads the few rows it shows) nor, in an object store, on disk: the
file is read through its storage (`Storage.open_for_reading`), by ranged reads of the row groups
read, never downloaded whole first."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainflow.contract import PixelRange
from trainflow.data.parquet import (
    IMAGE_COLUMN,
    IMAGE_SHAPE_METADATA_KEY,
    LABEL_COLUMN,
    PACKED_PIXEL_TYPES,
    PIXEL_TYPE_METADATA_KEY,
    READ_BATCH_BYTES,
    READ_BUFFER_BYTES,
    pixel_values,
)
from trainflow.data.validation import unit_pixels
from trainflow.paths import DataPaths
from trainflow.storage.artifacts import Storage

Examples = tuple[np.ndarray, np.ndarray]


class PreparedSplit:
    """One split as `trainflow/data/split_writer.py` writes it: images as stored (uint8 for an
    8-bit source, float32 in [0, 1] otherwise) and int64 labels, in row groups; the file at
    `path`, read through `storage` (each read opens it anew: in a store, a row group comes over
    the network each time it is read)."""

    def __init__(self, path: Path, storage: Storage) -> None:
        self.path = path
        self.storage = storage
        with storage.open_for_reading(path) as file:
            metadata = pq.read_metadata(file)
        schema = metadata.schema.to_arrow_schema()
        shape_text = (schema.metadata or {})[IMAGE_SHAPE_METADATA_KEY].decode()
        self.image_shape = tuple(int(part) for part in shape_text.split(","))
        image_type = schema.field(IMAGE_COLUMN).type
        self.pixel_dtype = (
            PACKED_PIXEL_TYPES[schema.metadata[PIXEL_TYPE_METADATA_KEY].decode()]
            if pa.types.is_fixed_size_binary(image_type)
            else np.dtype(image_type.value_type.to_pandas_dtype())  # a list of pixels
        )
        self.rows = metadata.num_rows
        self.group_rows = [
            metadata.row_group(index).num_rows for index in range(metadata.num_row_groups)
        ]

    @classmethod
    def of(cls, data: DataPaths, name: str) -> PreparedSplit:
        """Split `name` (train, validation or test) of the prepared data at `data`."""
        return cls(data.split(name), data.storage)

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
        rows = sum(self.group_rows[index] for index in indices)
        return next(self._regrouped(self._pieces(indices), [rows]))

    def batches(self, batch_rows: int) -> Iterator[Examples]:
        """All rows in file order, `batch_rows` at a time (the last batch may be smaller)."""
        sizes = (min(batch_rows, self.rows - first) for first in range(0, self.rows, batch_rows))
        yield from self._regrouped(self._pieces(None), sizes)

    def labels(self) -> np.ndarray:
        """Every label, without reading a pixel."""
        with self.storage.open_for_reading(self.path) as file, pq.ParquetFile(file) as parquet:
            return parquet.read(columns=[LABEL_COLUMN]).column(LABEL_COLUMN).to_numpy()

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
        return next(self._regrouped(self._pieces(None), [self.rows]))

    def _pieces(self, row_groups: list[int] | None) -> Iterator[Examples]:
        """The rows of `row_groups` (None: all) in small Arrow batches: decoding a list column
        takes many times its pixels in Arrow buffers (levels, offsets), so a batch of a few
        hundred KiB keeps that small, whatever the size of a row group."""
        batch_rows = max(1, READ_BATCH_BYTES // self.image_bytes)
        with (
            self.storage.open_for_reading(self.path) as file,
            pq.ParquetFile(file, buffer_size=READ_BUFFER_BYTES, pre_buffer=False) as parquet,
        ):
            for batch in parquet.iter_batches(
                batch_size=batch_rows, row_groups=row_groups, use_threads=False
            ):
                pixels = pixel_values(batch.column(IMAGE_COLUMN), self.pixel_dtype)
                yield (
                    pixels.reshape((batch.num_rows, *self.image_shape)),
                    batch.column(LABEL_COLUMN).to_numpy(),
                )

    def _regrouped(self, pieces: Iterator[Examples], sizes: Iterable[int]) -> Iterator[Examples]:
        """The rows of `pieces` again, in arrays of their own of the given numbers of rows (a
        piece that straddles two arrays is cut)."""
        pending: Examples | None = None
        for rows in sizes:
            images = np.empty((rows, *self.image_shape), dtype=self.pixel_dtype)
            labels = np.empty(rows, dtype=np.int64)
            filled = 0
            while filled < rows:
                piece_images, piece_labels = pending if pending is not None else next(pieces)
                take = min(rows - filled, len(piece_labels))
                images[filled : filled + take] = piece_images[:take]
                labels[filled : filled + take] = piece_labels[:take]
                pending = (
                    (piece_images[take:], piece_labels[take:]) if take < len(piece_labels) else None
                )
                filled += take
            yield images, labels


def read_split(path: Path, pixels: PixelRange = "unit") -> Examples:
    """The whole prepared split at `path` (a local file, or one under a store's local face) in
    memory, as float32 images (N, H, W) or (N, H, W, C) in the range `pixels` (`unit`: [0, 1];
    `raw`: the source's values, 0..255 for 8-bit pixels) and int64 labels. For tests and
    benchmarks; the stages stream."""
    images, labels = PreparedSplit(path, Storage.at(path.parent)).read()
    images = unit_pixels(images) if pixels == "unit" else images
    return images.astype(np.float32, copy=False), labels
