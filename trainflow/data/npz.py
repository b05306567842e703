"""The npz format: NumPy arrays x_train, y_train, x_test, y_test in one archive."""

from __future__ import annotations

import lzma
import math
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format
from numpy.lib.npyio import NpzFile

from trainflow.data.raw import RawSplit
from trainflow.errors import DataSourceError, error_reason

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


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


# Bit 0 of a zip member's flags: the member is encrypted.
ZIP_ENCRYPTED_FLAG = 0x1


NPY_HEADER_READERS = {
    (1, 0): npy_format.read_array_header_1_0,
    (2, 0): npy_format.read_array_header_2_0,
}


@dataclass(frozen=True)
class StoredArray:
    """A .npy member stored uncompressed in an npz (as numpy.savez writes it): where its values
    start in the file, its .npy header (which the member's CRC covers too), and what it declares."""

    path: Path
    member: str
    start: int
    header: bytes
    shape: tuple[int, ...]
    dtype: np.dtype
    crc: int

    def chunks(self, max_rows: int) -> Iterator[np.ndarray]:
        """The rows in chunks of at most `max_rows`, each memory-mapped on its own (the pages of a
        map count as this process's memory until it is closed); the member's CRC is checked as
        they are read, as zipfile would have checked it."""
        row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        crc = zlib.crc32(self.header)
        for start in range(0, self.shape[0], max_rows):
            rows = min(max_rows, self.shape[0] - start)
            chunk = np.memmap(
                self.path,
                self.dtype,
                mode="r",
                offset=self.start + start * row_bytes,
                shape=(rows, *self.shape[1:]),
            )
            crc = zlib.crc32(chunk, crc)
            yield chunk
            del chunk  # else mapped while the next chunk is
        if crc != self.crc:
            raise DataSourceError(
                f"{self.path}: not a readable npz file (Bad CRC-32 for file {self.member!r})"
            )


def stored_array(path: Path, archive: zipfile.ZipFile, key: str) -> StoredArray | None:
    """Array `key` of the npz at `path` as a `StoredArray`, or None unless it is a plain one:
    stored, unencrypted, a C-order .npy array of values (no objects) that fill the member. numpy
    then reads it whole, with its own errors for what is wrong with it."""
    member = key if key in archive.namelist() else f"{key}.npy"
    info = archive.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & ZIP_ENCRYPTED_FLAG:
        return None
    with path.open("rb") as stream:
        # The local header's name and extra field may differ in length from the central one's.
        stream.seek(info.header_offset)
        local_header = stream.read(zipfile.sizeFileHeader)
        if len(local_header) != zipfile.sizeFileHeader or local_header[:4] != b"PK\x03\x04":
            return None
        *_, name_length, extra_length = struct.unpack(zipfile.structFileHeader, local_header)
        member_start = stream.tell() + name_length + extra_length
        stream.seek(member_start)
        declared = _npy_header(stream)
        header_length = stream.tell() - member_start
        stream.seek(member_start)
        header = stream.read(header_length)
    if declared is None:
        return None
    shape, fortran_order, dtype = declared
    if (
        fortran_order
        or dtype.hasobject
        or not shape
        or math.prod(shape) == 0
        or header_length + math.prod(shape) * dtype.itemsize != info.file_size
    ):
        return None
    return StoredArray(path, member, member_start + header_length, header, shape, dtype, info.CRC)


def _npy_header(stream: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    try:
        reader = NPY_HEADER_READERS.get(npy_format.read_magic(stream))
        return None if reader is None else reader(stream)
    # What numpy's parser raises for a damaged header; numpy reading the member says it better.
    except (ValueError, SyntaxError, tokenize.TokenError):
        return None


def read_npz(path: Path) -> dict[str, RawSplit]:
    """Read an npz with arrays x_train, y_train, x_test, y_test (pickles are refused). Images stored
    uncompressed (numpy.savez) are read from the file chunk by chunk, memory-mapped; compressed
    ones (numpy.savez_compressed) and labels are read whole."""
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
            arrays = {key: _read_member(path, archive, key) for key in NPZ_KEYS}
    except NPZ_READ_ERRORS as error:
        raise DataSourceError(f"{path}: not a readable npz file ({error_reason(error)})") from error
    # numpy hands back the raw bytes of a member that is not in .npy format.
    not_arrays = [
        key for key, array in arrays.items() if not isinstance(array, np.ndarray | StoredArray)
    ]
    if not_arrays:
        raise DataSourceError(
            f"{path}: {', '.join(not_arrays)} not in .npy format; save the arrays with numpy.savez"
        )
    return {split: _npz_split(path, split, arrays) for split in ("train", "test")}


def _npz_split(path: Path, split: str, arrays: dict[str, np.ndarray | StoredArray]) -> RawSplit:
    images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
    origin = f"{path} (x_{split}, y_{split})"
    if isinstance(images, StoredArray):
        return RawSplit(origin, images.shape, images.dtype, labels, images.chunks)
    return RawSplit.of_arrays(images, labels, origin)


def _read_member(path: Path, archive: NpzFile, key: str) -> np.ndarray | StoredArray | bytes:
    """An image member as a `StoredArray` if it is one, else (labels too) as numpy reads it."""
    stored = stored_array(path, archive.zip, key) if key.startswith("x_") else None
    return archive[key] if stored is None else stored
