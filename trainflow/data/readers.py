"""Readers of the file formats a data source may have: gzipped or plain IDX, npz and Parquet.

A reader returns raw arrays by split (`all`, or `train` and `test`, plus `validation` for Parquet
data this project prepared); checking and normalising them is `validation.py`'s job.
"""

from __future__ import annotations

import gzip
import re
import struct
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
    shape = struct.unpack(f">{dimension_count}I", content[4:header_size])
    expected_size = int(np.prod(shape, dtype=np.int64))
    if len(content) - header_size != expected_size:
        raise DataSourceError(
            f"{path}: IDX header promises {expected_size} values of shape {shape}, "
            f"the file holds {len(content) - header_size}"
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
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataSourceError(
                    f"{path}: missing arrays {', '.join(missing)}; an npz source needs "
                    f"{', '.join(NPZ_KEYS)} (found {', '.join(archive.files) or 'none'})"
                )
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except (OSError, ValueError, EOFError, zlib.error) as error:
        raise DataSourceError(f"{path}: not a readable npz file ({error})") from error
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
    square image is assumed.
    """
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise DataSourceError(f"{path}: not a readable Parquet file ({error})") from error
    columns = set(table.column_names)
    if columns != {IMAGE_COLUMN, LABEL_COLUMN}:
        raise DataSourceError(
            f"{path}: columns are {sorted(columns)}; expected exactly "
            f"{IMAGE_COLUMN!r} (fixed-size list of pixels) and {LABEL_COLUMN!r} (integer)"
        )
    image_type = table.schema.field(IMAGE_COLUMN).type
    label_type = table.schema.field(LABEL_COLUMN).type
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
    shape = _image_shape(path, table.schema, image_type.list_size)
    pixels = table.column(IMAGE_COLUMN).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    labels = table.column(LABEL_COLUMN).to_numpy()
    return RawSplit(pixels.reshape((table.num_rows, *shape)), labels, str(path))


def _image_shape(path: Path, schema: pa.Schema, pixel_count: int) -> tuple[int, int]:
    recorded = (schema.metadata or {}).get(IMAGE_SHAPE_METADATA_KEY)
    if recorded is not None:
        height, width = (int(part) for part in recorded.decode().split(","))
    else:
        height = width = round(pixel_count**0.5)
    if height * width != pixel_count:
        raise DataSourceError(
            f"{path}: images of {pixel_count} pixels do not fit the shape {height}x{width}; "
            "set the schema metadata trainflow.image_shape to 'HEIGHT,WIDTH'"
        )
    return height, width
