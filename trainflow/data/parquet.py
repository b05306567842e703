"""The Parquet format: an `image` column of fixed-size pixel lists and an integer `label` column
per split file, with the image shape in the schema metadata."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from trainflow.data.raw import RawSplit
from trainflow.errors import DataSourceError, error_reason

IMAGE_COLUMN = "image"


LABEL_COLUMN = "label"


IMAGE_SHAPE_METADATA_KEY = b"trainflow.image_shape"


def read_parquet_directory(files: list[Path]) -> dict[str, RawSplit]:
    """Read train/validation/test Parquet files in this project's schema."""
    by_name = {path.stem: path for path in files}
    if not {"train", "test"} <= set(by_name):
        raise DataSourceError(
            f"{files[0].parent}: a parquet source needs train.parquet and test.parquet "
            f"(found {', '.join(sorted(path.name for path in files))})"
        )
    return {
        name: read_parquet_split(by_name[name])
        for name in ("train", "validation", "test")
        if name in by_name
    }


def read_parquet_split(path: Path) -> RawSplit:
    """Read one split: an `image` column of fixed-size pixel lists and an integer `label` column.

    The image shape comes from the schema metadata `trainflow.image_shape` ("28,28"); without it a
    square image is assumed. The schema is checked before the rows are read: pyarrow cannot read
    some schemas' rows back (lists of 0 pixels), and its errors would not say what to fix.
    """
    try:
        dataset = pq.ParquetDataset(path)
        schema = dataset.schema
    except (OSError, pa.ArrowException) as error:
        raise _unreadable_parquet(path, error) from error
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
    shape = _image_shape(path, schema, image_type.list_size)
    try:
        table = dataset.read()
    except (OSError, pa.ArrowException) as error:
        raise _unreadable_parquet(path, error) from error
    image_lists = table.column(IMAGE_COLUMN).combine_chunks()
    pixels = image_lists.flatten()
    labels = table.column(LABEL_COLUMN)
    # Nulls would otherwise become NaN (misreported) or vanish from the flattened pixels.
    for column, nulls, what in (
        (LABEL_COLUMN, labels.null_count, "labels"),
        (IMAGE_COLUMN, image_lists.null_count, "images"),
        (IMAGE_COLUMN, pixels.null_count, "pixels"),
    ):
        if nulls:
            raise DataSourceError(
                f"{path}: column {column!r} has {nulls} null {what}; fill them in or drop "
                "those rows"
            )
    images = pixels.to_numpy(zero_copy_only=False).reshape((table.num_rows, *shape))
    return RawSplit(images, labels.to_numpy(), str(path))


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
