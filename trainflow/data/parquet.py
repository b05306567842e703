"""The Parquet format: an `image` column of fixed-size pixel lists and an integer `label` column
per split file, with the image shape in the schema metadata."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainflow.data.raw import ImageChunks, RawSplit
from trainflow.errors import DataSourceError, error_reason

IMAGE_COLUMN = "image"


LABEL_COLUMN = "label"


IMAGE_SHAPE_METADATA_KEY = b"trainflow.image_shape"


# Pixels per batch read: pyarrow's buffers for a batch of a list column (levels, 32-bit values) are
# many times its pixels; batches of 8 MiB took 150 MiB, and were slower than small ones.
READ_BATCH_BYTES = 2**18


# Bytes read from the file at a time: without buffering, pyarrow reads a whole column chunk (all
# the images of a row group) at once.
READ_BUFFER_BYTES = 2**20


def read_parquet_directory(files: list[Path]) -> dict[str, RawSplit]:
    """Open train/validation/test Parquet files in this project's schema."""
    by_name = {path.stem: path for path in files}
    if not {"train", "test"} <= set(by_name):
        raise DataSourceError(
            f"{files[0].parent}: a parquet source needs train.parquet and test.parquet "
            f"(found {', '.join(sorted(path.name for path in files))})"
        )
    return {
        name: open_parquet_split(by_name[name])
        for name in ("train", "validation", "test")
        if name in by_name
    }


def open_parquet_split(path: Path) -> RawSplit:
    """Open one split: an `image` column of fixed-size pixel lists and an integer `label` column.
    The labels are read now, the images as the split's chunks are, batch by batch.

    The image shape comes from the schema metadata `trainflow.image_shape` ("28,28"); without it a
    square image is assumed. The schema is checked before the rows are read: pyarrow cannot read
    some schemas' rows back (lists of 0 pixels), and its errors would not say what to fix.
    """
    try:
        with pq.ParquetFile(path) as parquet:
            schema, rows = parquet.schema_arrow, parquet.metadata.num_rows
            image_type = _checked_image_type(path, schema)
            shape = _image_shape(path, schema, image_type.list_size)
            labels = parquet.read(columns=[LABEL_COLUMN]).column(LABEL_COLUMN)
    except (OSError, pa.ArrowException) as error:
        raise _unreadable_parquet(path, error) from error
    # Nulls would otherwise become NaN (misreported) or vanish from the flattened pixels.
    if labels.null_count:
        raise _nulls_error(path, LABEL_COLUMN, labels.null_count, "labels")
    return RawSplit(
        origin=str(path),
        shape=(rows, *shape),
        pixel_dtype=np.dtype(image_type.value_type.to_pandas_dtype()),
        labels=labels.to_numpy(),
        image_chunks=_image_chunks(path, shape),
    )


def _checked_image_type(path: Path, schema: pa.Schema) -> pa.FixedSizeListType:
    if sorted(schema.names) != [IMAGE_COLUMN, LABEL_COLUMN]:
        raise DataSourceError(
            f"{path}: columns are {sorted(schema.names)}; expected exactly "
            f"{IMAGE_COLUMN!r} (fixed-size list of pixels) and {LABEL_COLUMN!r} (integer)"
        )
    image_type = schema.field(IMAGE_COLUMN).type
    label_type = schema.field(LABEL_COLUMN).type
    if not pa.types.is_fixed_size_list(image_type) or not (
        pa.types.is_integer(image_type.value_type) or pa.types.is_floating(image_type.value_type)
    ):
        raise DataSourceError(
            f"{path}: column {IMAGE_COLUMN!r} has type {image_type}; expected a fixed-size list "
            "of integer or float pixels"
        )
    if not pa.types.is_integer(label_type):
        raise DataSourceError(
            f"{path}: column {LABEL_COLUMN!r} has type {label_type}; expected an integer type"
        )
    return image_type


def _image_chunks(path: Path, shape: tuple[int, ...]) -> ImageChunks:
    """Read the images of `path` batch by batch (`pyarrow.parquet.ParquetFile.iter_batches`, which
    streams a row group, where `pyarrow.dataset` would accumulate memory: apache/arrow#39808)."""

    def chunks(max_rows: int) -> Iterator[np.ndarray]:
        batch_rows = min(max_rows, max(1, READ_BATCH_BYTES // math.prod(shape)))
        try:
            with pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False) as parquet:
                batches = parquet.iter_batches(batch_size=batch_rows, columns=[IMAGE_COLUMN])
                for batch in batches:
                    image_lists = batch.column(0)
                    pixels = image_lists.flatten()
                    if image_lists.null_count or pixels.null_count:
                        raise _null_images_error(path, itertools.chain([batch], batches))
                    values = pixels.to_numpy(zero_copy_only=False)
                    yield values.reshape((batch.num_rows, *shape))
        except (OSError, pa.ArrowException) as error:
            raise _unreadable_parquet(path, error) from error

    return chunks


def _null_images_error(path: Path, batches: Iterable[pa.RecordBatch]) -> DataSourceError:
    """The error for the null images, else the null pixels, of `batches` (the rest of the file:
    the batches before them had none)."""
    images = pixels = 0
    for batch in batches:
        images += batch.column(0).null_count
        pixels += batch.column(0).flatten().null_count
    if images:
        return _nulls_error(path, IMAGE_COLUMN, images, "images")
    return _nulls_error(path, IMAGE_COLUMN, pixels, "pixels")


def _nulls_error(path: Path, column: str, nulls: int, what: str) -> DataSourceError:
    return DataSourceError(
        f"{path}: column {column!r} has {nulls} null {what}; fill them in or drop those rows"
    )


def _unreadable_parquet(path: Path, error: Exception) -> DataSourceError:
    return DataSourceError(f"{path}: not a readable Parquet file ({error_reason(error)})")


def _image_shape(path: Path, schema: pa.Schema, pixel_count: int) -> tuple[int, ...]:
    if pixel_count == 0:
        raise DataSourceError(
            f"{path}: column {IMAGE_COLUMN!r} holds lists of 0 pixels; every image needs at "
            "least one pixel"
        )
    recorded = (schema.metadata or {}).get(IMAGE_SHAPE_METADATA_KEY)
    if recorded is not None:
        shape = _recorded_image_shape(path, recorded)
    else:
        side = round(pixel_count**0.5)
        shape = (side, side)
    if math.prod(shape) != pixel_count:
        raise DataSourceError(
            f"{path}: images of {pixel_count} pixels do not fit the shape "
            f"{'x'.join(map(str, shape))}; set the schema metadata trainflow.image_shape to "
            "'HEIGHT,WIDTH' or 'HEIGHT,WIDTH,CHANNELS'"
        )
    return shape


def _recorded_image_shape(path: Path, recorded: bytes) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in recorded.decode().split(","))
    except ValueError:  # not UTF-8 (UnicodeDecodeError is a ValueError), or not integers
        pass
    else:
        if len(shape) in (2, 3) and min(shape) > 0:
            return shape
    raise DataSourceError(
        f"{path}: schema metadata trainflow.image_shape is {recorded.decode(errors='replace')!r}; "
        "expected 'HEIGHT,WIDTH' or 'HEIGHT,WIDTH,CHANNELS', positive integers such as '28,28'"
    )
