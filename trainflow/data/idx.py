"""The IDX format (MNIST's): gzipped or plain files of unsigned bytes, images and labels in pairs."""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from trainflow.data.raw import RawSplit
from trainflow.errors import DataSourceError

IDX_FILE_PATTERN = re.compile(r"^(?P<prefix>.+)-(?P<role>images-idx[34]|labels-idx1)-ubyte(\.gz)?$")


IDX_TEST_PREFIXES = ("t10k", "test")


IDX_UINT8_TYPE_CODE = 0x08


# Labels have 1 dimension, images 3 (count, height, width) or 4 with a last dimension of 1.
IDX_MAX_DIMENSIONS = 4


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
        names[prefix]: RawSplit(
            read_idx_file(pair["images"]),
            read_idx_file(pair["labels"]),
            f"{pair['images']} + {pair['labels'].name}",
        )
        for prefix, pair in pairs.items()
    }
