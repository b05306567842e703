"""The IDX format (MNIST's): gzipped or plain files of unsigned bytes, images and labels in pairs."""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from trainflow.data.raw import ImageChunks, RawSplit
from trainflow.errors import DataSourceError

IDX_FILE_PATTERN = re.compile(r"^(?P<prefix>.+)-(?P<role>images-idx[34]|labels-idx1)-ubyte(\.gz)?$")


IDX_TEST_PREFIXES = ("t10k", "test")


IDX_UINT8_TYPE_CODE = 0x08


# Labels have 1 dimension, images 3 (count, height, width) or 4 with a last dimension of 1.
IDX_MAX_DIMENSIONS = 4


# What follows the promised values of a gzipped file is counted in pieces of this size.
REST_PIECE_BYTES = 2**20


def read_idx_file(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) of unsigned bytes, whole, into an array of its
    dimensions."""
    with _opened(path) as (stream, shape):
        content = stream.read()
    _check_size(path, shape, len(content))
    return np.frombuffer(content, dtype=np.uint8).reshape(shape)


def _idx_shape(path: Path) -> tuple[int, ...]:
    with _opened(path) as (_, shape):
        return shape


@contextmanager
def _opened(path: Path) -> Iterator[tuple[BinaryIO, tuple[int, ...]]]:
    """The IDX file at `path`, open after its header, and the dimensions it declares. A plain file
    is compared with the header's promise now; a gzipped one only as it is read (`_check_size`)."""
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb") as stream:
            shape = _read_header(path, stream)
            if not path.name.endswith(".gz"):
                _check_size(path, shape, path.stat().st_size - stream.tell())
            # numpy refuses a shape whose nonzero dimensions multiply past its index range, even
            # for an array without values (a dimension of 0), which the size check lets through.
            if math.prod(dimension for dimension in shape if dimension) > np.iinfo(np.intp).max:
                raise DataSourceError(
                    f"{path}: IDX header declares the shape {shape}, too large for an array; "
                    "the header is damaged"
                )
            yield stream, shape
    except (OSError, EOFError, zlib.error) as error:
        raise DataSourceError(
            f"{path}: cannot decompress ({error}); the file is damaged"
        ) from error


def _read_header(path: Path, stream: BinaryIO) -> tuple[int, ...]:
    start = stream.read(4)
    if len(start) < 4 or start[0:2] != b"\x00\x00" or start[2] != IDX_UINT8_TYPE_CODE:
        raise DataSourceError(
            f"{path}: not an IDX file of unsigned bytes (magic {start.hex() or 'missing'}, "
            "expected 000008 followed by the number of dimensions)"
        )
    dimension_count = start[3]
    dimensions = stream.read(4 * dimension_count)
    if dimension_count == 0 or len(dimensions) < 4 * dimension_count:
        raise DataSourceError(f"{path}: IDX header is incomplete")
    if dimension_count > IDX_MAX_DIMENSIONS:
        raise DataSourceError(
            f"{path}: IDX header declares {dimension_count} dimensions; expected 1 (labels) "
            "or 3 (images: count, height, width)"
        )
    return struct.unpack(f">{dimension_count}I", dimensions)


def _check_size(path: Path, shape: tuple[int, ...], held: int) -> None:
    # In Python integers: numpy's int64 product of large dimensions wraps around, even to 0.
    expected_size = math.prod(shape)
    if held != expected_size:
        raise DataSourceError(
            f"{path}: IDX header promises {expected_size} values of shape {shape}, "
            f"the file holds {held}"
        )


def _image_chunks(path: Path, shape: tuple[int, ...]) -> ImageChunks:
    """Read the images of `path` (of dimensions `shape`) record by record, as chunks."""

    def chunks(max_rows: int) -> Iterator[np.ndarray]:
        record_bytes = math.prod(shape[1:])
        with _opened(path) as (stream, _):
            for start in range(0, shape[0], max_rows):
                yield _records(path, stream, shape, start, min(max_rows, shape[0] - start))
            # A gzipped file longer than promised: count what follows, to say how much it holds.
            rest = sum(len(piece) for piece in iter(lambda: stream.read(REST_PIECE_BYTES), b""))
            _check_size(path, shape, shape[0] * record_bytes + rest)

    return chunks


def _records(
    path: Path, stream: BinaryIO, shape: tuple[int, ...], start: int, rows: int
) -> np.ndarray:
    """The next `rows` images of `stream`, the first of them image `start`."""
    record_bytes = math.prod(shape[1:])
    content = stream.read(rows * record_bytes)
    if len(content) < rows * record_bytes:  # a gzipped file shorter than promised
        _check_size(path, shape, start * record_bytes + len(content))
    return np.frombuffer(content, dtype=np.uint8).reshape(rows, *shape[1:])


def read_idx_directory(files: list[Path]) -> dict[str, RawSplit]:
    """Pair `<prefix>-images-idx3-ubyte[.gz]` (or `idx4`, with channels) with
    `<prefix>-labels-idx1-ubyte[.gz]` files.

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
        names[prefix]: _idx_split(pair["images"], pair["labels"]) for prefix, pair in pairs.items()
    }


def _idx_split(images: Path, labels: Path) -> RawSplit:
    shape = _idx_shape(images)
    return RawSplit(
        origin=f"{images} + {labels.name}",
        shape=shape,
        pixel_dtype=np.dtype(np.uint8),
        labels=read_idx_file(labels),
        image_chunks=_image_chunks(images, shape),
    )
