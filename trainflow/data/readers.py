"""Readers of the file formats a data source may have: gzipped or plain IDX, npz and Parquet.

A reader returns raw arrays by split (`all`, or `train` and `test`, plus `validation` for Parquet
data this project prepared); checking and normalising them is `validation.py`'s job.
"""

from __future__ import annotations

import gzip
import lzma
import math
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainflow.errors import DataSourceError

IMAGE_COLUMN = "image"


LABEL_COLUMN = "label"


IMAGE_SHAPE_METADATA_KEY = b"trainflow.image_shape"


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


IDX_FILE_PATTERN = re.compile(r"^(?P<prefix>.+)-(?P<role>images-idx3|labels-idx1)-ubyte(\.gz)?$")


IDX_TEST_PREFIXES = ("t10k", "test")


IDX_UINT8_TYPE_CODE = 0x08


# Labels have 1 dimension, images 3 (count, height, width) or 4 with a last dimension of 1.
IDX_MAX_DIMENSIONS = 4


# What reading an npz can raise for a damaged or hostile file: zipfile raises RuntimeError for an
# encrypted member and NotImplementedError (a RuntimeError) for an unknown compression method, and
# MemoryError comes from a .npy header that declares a huge array.
NPZ_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    zipfile.BadZipFile,
    RuntimeError,
    MemoryError,
)


def _error_reason(error: BaseException) -> str:
    """The first line of an exception's message (or its type), to quote in a one-line error."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__


@dataclass
class RawSplit:
    """Images and labels of one split, and where they came from (for error messages)."""

    images: np.ndarray
    labels: np.ndarray
    origin: str


def read_idx_file(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) of unsigned bytes into an array of its dimensions."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                content = stream.read()
        else:
            content = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataSourceError(
            f"{path}: cannot decompress ({error}); the file is damaged"
        ) from error
    if len(content) < 4 or content[0:2] != b"\x00\x00" or content[2] != IDX_UINT8_TYPE_CODE:
        raise DataSourceError(
            f"{path}: not an IDX file of unsigned bytes (magic {content[:4].hex() or 'missing'}, "
            "expected 000008 followed by the number of dimensions)"
        )
    dimension_count = content[3]
    header_size = 4 + 4 * dimension_count
    if dimension_count == 0 or len(content) < header_size:
        raise DataSourceError(f"{path}: IDX header is incomplete")
    if dimension_count > IDX_MAX_DIMENSIONS:
        raise DataSourceError(
            f"{path}: IDX header declares {dimension_count} dimensions; expected 1 (labels) "
            "or 3 (images: count, height, width)"
        )
    shape = struct.unpack(f">{dimension_count}I", content[4:header_size])
    # In Python integers: numpy's int64 product of large dimensions wraps around, even to 0.
    expected_size = math.prod(shape)
    if len(content) - header_size != expected_size:
        raise DataSourceError(
            f"{path}: IDX header promises {expected_size} values of shape {shape}, "
            f"the file holds {len(content) - header_size}"
        )
    # numpy refuses a shape whose nonzero dimensions multiply past its index range, even for an
    # array without values (a dimension of 0), which the size check above lets through.
    if math.prod(dimension for dimension in shape if dimension) > np.iinfo(np.intp).max:
        raise DataSourceError(
            f"{path}: IDX header declares the shape {shape}, too large for an array; "
            "the header is damaged"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)


def read_idx_directory(files: list[Path]) -> dict[str, RawSplit]:
    """Pair `<prefix>-images-idx3-ubyte[.gz]` with `<prefix>-labels-idx1-ubyte[.gz]` files.

    One pair is a single split (`all`); a `train` pair and a `t10k` (or `test`) pair are train/test.
    """
    pairs: dict[str, dict[str, Path]] = {}
    for path in files:
        match = IDX_FILE_PATTERN.match(path.name)
        assert match is not None  # locate_source_files selected these names
        pairs.setdefault(match["prefix"], {})[match["role"].split("-")[0]] = path
    for prefix, pair in pairs.items():
        if set(pair) != {"images", "labels"}:
            missing = ({"images", "labels"} - set(pair)).pop()
            raise DataSourceError(f"{files[0].parent}: {prefix} has no {missing} IDX file")
    if len(pairs) == 1:
        names = {next(iter(pairs)): "all"}
    else:
        test_prefixes = [prefix for prefix in pairs if prefix in IDX_TEST_PREFIXES]
        if set(pairs) != {"train", *test_prefixes} or len(test_prefixes) != 1:
            raise DataSourceError(
                f"{files[0].parent}: found IDX pairs {sorted(pairs)}; expected one pair, "
                "or a train pair and a t10k (test) pair"
            )
        names = {"train": "train", test_prefixes[0]: "test"}
    return {
        names[prefix]: RawSplit(
            read_idx_file(pair["images"]),
            read_idx_file(pair["labels"]),
            f"{pair['images']} + {pair['labels'].name}",
        )
        for prefix, pair in pairs.items()
    }


def read_npz(path: Path) -> dict[str, RawSplit]:
    """Read an npz with arrays x_train, y_train, x_test, y_test (pickles are refused)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            raise DataSourceError(
                f"{path}: a single .npy array, not an npz archive; save the arrays "
                f"{', '.join(NPZ_KEYS)} together with numpy.savez"
            )
        with loaded as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataSourceError(
                    f"{path}: missing arrays {', '.join(missing)}; an npz source needs "
                    f"{', '.join(NPZ_KEYS)} (found {', '.join(archive.files) or 'none'})"
                )
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except NPZ_READ_ERRORS as error:
        raise DataSourceError(
            f"{path}: not a readable npz file ({_error_reason(error)})"
        ) from error
    # numpy hands back the raw bytes of a member that is not in .npy format.
    not_arrays = [key for key, array in arrays.items() if not isinstance(array, np.ndarray)]
    if not_arrays:
        raise DataSourceError(
            f"{path}: {', '.join(not_arrays)} not in .npy format; save the arrays with numpy.savez"
        )
    return {
        split: RawSplit(
            arrays[f"x_{split}"], arrays[f"y_{split}"], f"{path} (x_{split}, y_{split})"
        )
        for split in ("train", "test")
    }


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
    return DataSourceError(f"{path}: not a readable Parquet file ({_error_reason(error)})")


def _image_shape(path: Path, schema: pa.Schema, pixel_count: int) -> tuple[int, int]:
    if pixel_count == 0:
        raise DataSourceError(
            f"{path}: column {IMAGE_COLUMN!r} holds lists of 0 pixels; every image needs at "
            "least one pixel"
        )
    recorded = (schema.metadata or {}).get(IMAGE_SHAPE_METADATA_KEY)
    if recorded is not None:
        height, width = _recorded_image_shape(path, recorded)
    else:
        height = width = round(pixel_count**0.5)
    if height * width != pixel_count:
        raise DataSourceError(
            f"{path}: images of {pixel_count} pixels do not fit the shape {height}x{width}; "
            "set the schema metadata trainflow.image_shape to 'HEIGHT,WIDTH'"
        )
    return height, width


def _recorded_image_shape(path: Path, recorded: bytes) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in recorded.decode().split(","))
    except ValueError:  # not UTF-8 (UnicodeDecodeError is a ValueError), or not two integers
        pass
    else:
        if height > 0 and width > 0:
            return height, width
    raise DataSourceError(
        f"{path}: schema metadata trainflow.image_shape is {recorded.decode(errors='replace')!r}; "
        "expected 'HEIGHT,WIDTH', two positive integers such as '28,28'"
    )
