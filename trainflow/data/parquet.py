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


# With an `image` column of fixed-size binary (the pixels' bytes, as prepared data stores them),
# the pixels' type: "uint8" or "float32".
PIXEL_TYPE_METADATA_KEY = b"trainflow.pixel_type"
PACKED_PIXEL_TYPES = {"uint8": np.dtype(np.uint8), "float32": np.dtype(np.float32)}


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
            pixel_dtype, pixel_count = _checked_image_type(path, schema)
            shape = _image_shape(path, schema, pixel_count)
            labels = parquet.read(columns=[LABEL_COLUMN]).column(LABEL_COLUMN)
    except (OSError, pa.ArrowException) as error:
        raise _unreadable_parquet(path, error) from error
    # Nulls would otherwise become NaN (misreported) or vanish from the flattened pixels.
    if labels.null_count:
        raise _nulls_error(path, LABEL_COLUMN, labels.null_count, "labels")
    return RawSplit(
        origin=str(path),
        shape=(rows, *shape),
        pixel_dtype=pixel_dtype,
        labels=labels.to_numpy(),
        image_chunks=_image_chunks(path, shape, pixel_dtype),
    )


def pixel_values(images: pa.Array, pixel_dtype: np.dtype) -> np.ndarray:
    """The pixels of an `image` column, flat: a fixed-size list's values, or a fixed-size binary
    column's bytes read as `pixel_dtype` (without a copy)."""
    if pa.types.is_fixed_size_binary(images.type):
        width = images.type.byte_width
        return np.frombuffer(
            images.buffers()[1],
            dtype=pixel_dtype,
            count=len(images) * width // pixel_dtype.itemsize,
            offset=images.offset * width,
        )
    return images.flatten().to_numpy(zero_copy_only=False)


def _checked_image_type(path: Path, schema: pa.Schema) -> tuple[np.dtype, int]:
    """The pixels' dtype and count an image of `path` has, once its columns are checked."""
    if sorted(schema.names) != [IMAGE_COLUMN, LABEL_COLUMN]:
        raise DataSourceError(
            f"{path}: columns are {sorted(schema.names)}; expected exactly "
            f"{IMAGE_COLUMN!r} (fixed-size list of pixels) and {LABEL_COLUMN!r} (integer)"
        )
    image_type = schema.field(IMAGE_COLUMN).type
    label_type = schema.field(LABEL_COLUMN).type
    if not pa.types.is_integer(label_type):
        raise DataSourceError(
            f"{path}: column {LABEL_COLUMN!r} has type {label_type}; expected an integer type"
        )
    packed = (schema.metadata or {}).get(PIXEL_TYPE_METADATA_KEY, b"").decode(errors="replace")
    if pa.types.is_fixed_size_binary(image_type) and packed in PACKED_PIXEL_TYPES:
        pixel_dtype = PACKED_PIXEL_TYPES[packed]
        if image_type.byte_width % pixel_dtype.itemsize == 0:
            return pixel_dtype, image_type.byte_width // pixel_dtype.itemsize
    if pa.types.is_fixed_size_list(image_type) and (
        pa.types.is_integer(image_type.value_type) or pa.types.is_floating(image_type.value_type)
    ):
        return np.dtype(image_type.value_type.to_pandas_dtype()), image_type.list_size
    raise DataSourceError(
        f"{path}: column {IMAGE_COLUMN!r} has type {image_type}; expected a fixed-size list "
        "of integer or float pixels (or fixed-size binary with the schema metadata "
        "trainflow.pixel_type 'uint8' or 'float32', as prepared data stores them)"
    )


def _image_chunks(path: Path, shape: tuple[int, ...], pixel_dtype: np.dtype) -> ImageChunks:
    """Read the images of `path` batch by batch (`pyarrow.parquet.ParquetFile.iter_batches`, which
    streams a row group, where `pyarrow.dataset` would accumulate memory: apache/arrow#39808)."""

    def chunks(max_rows: int) -> Iterator[np.ndarray]:
        batch_rows = min(max_rows, max(1, READ_BATCH_BYTES // math.prod(shape)))
        try:
            with pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES, pre_buffer=False) as parquet:
                batches = parquet.iter_batches(batch_size=batch_rows, columns=[IMAGE_COLUMN])
                for batch in batches:
                    images = batch.column(0)
                    if images.null_count or _null_pixels(images):
                        raise _null_images_error(path, itertools.chain([batch], batches))
                    yield pixel_values(images, pixel_dtype).reshape((batch.num_rows, *shape))
        except (OSError, pa.ArrowException) as error:
            raise _null_lists_error(path, error) or _unreadable_parquet(path, error) from error

    return chunks


def _null_lists_error(path: Path, error: Exception) -> DataSourceError | None:
    """pyarrow 25 cannot read a fixed-size list column holding a null list (26 can: the images
    check above then counts them); its error names no column. The column statistics count the
    null images (with any null pixels): None when that is not the error, or there are none."""
    if not (isinstance(error, pa.ArrowInvalid) and "had size=0" in str(error)):
        return None
    with pq.ParquetFile(path) as parquet:
        metadata = parquet.metadata
        nulls = 0
        for group in range(metadata.num_row_groups):
            for index in range(metadata.num_columns):
                column = metadata.row_group(group).column(index)
                if column.path_in_schema.split(".")[0] == IMAGE_COLUMN and column.statistics:
                    nulls += column.statistics.null_count or 0
    return _nulls_error(path, IMAGE_COLUMN, nulls, "images") if nulls else None


def _null_images_error(path: Path, batches: Iterable[pa.RecordBatch]) -> DataSourceError:
    """The error for the null images, else the null pixels, of `batches` (the rest of the file:
    the batches before them had none)."""
    images = pixels = 0
    for batch in batches:
        images += batch.column(0).null_count
        pixels += _null_pixels(batch.column(0))
    if images:
        return _nulls_error(path, IMAGE_COLUMN, images, "images")
    return _nulls_error(path, IMAGE_COLUMN, pixels, "pixels")


def _null_pixels(images: pa.Array) -> int:
    """Null pixels in a list column (a binary column has none: its pixels are bytes)."""
    return 0 if pa.types.is_fixed_size_binary(images.type) else images.flatten().null_count


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
