"""Reading an object where it lies: HTTP ranged reads, never a download of the whole object first.

`open_object(store, key)` gives a seekable binary file over one object (what pyarrow's Parquet
reader and a streamed digest need). A read asks the store for the bytes it lacks, and a bounded
read-ahead after them, in one ranged GET; the file holds only that block. Every request goes
through `ObjectStore.call`, so a transient fault is retried (the read made again from the same
position) and never reported as missing or damaged content. The object is read as it was when
opened: s3fs sends the ETag it saw then with each request (`If-Match`).
"""

from __future__ import annotations

import io
from typing import BinaryIO

from trainflow.storage.stores import ObjectStore

# Bytes asked for beyond what a read needs, and about all an open file holds. pyarrow reads a
# prepared split 1 MiB at a time (a row group is about 4 MiB), so one request serves a row group
# or so: few enough requests that their latency does not dominate, little enough memory for many
# files open at once. s3fs's default (50 MiB) would hold a whole small split in every open file.
READ_AHEAD_BYTES = 4 * 2**20


class RangedFile(io.RawIOBase):
    """An object of a store read in place; see the module docstring."""

    def __init__(self, store: ObjectStore, key: str, file: BinaryIO) -> None:
        super().__init__()
        self._store, self._key, self._file = store, key, file

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)  # arithmetic only: the next read asks the store

    def tell(self) -> int:
        return self._file.tell()

    def read(self, size: int = -1) -> bytes:
        position = self._file.tell()

        def attempt() -> bytes:
            self._file.seek(position)  # where the failed attempt started
            return self._file.read(size)

        return self._store.call(attempt, f"read {self._key}")

    def close(self) -> None:
        self._file.close()
        super().close()


def open_object(store: ObjectStore, key: str) -> RangedFile:
    """The object `key` of `store`, opened for ranged reads (FileNotFoundError if there is none)."""
    file = store.call(
        lambda: store.fs.open(
            store.path(key), "rb", block_size=READ_AHEAD_BYTES, cache_type="readahead"
        ),
        f"read {key}",
    )
    return RangedFile(store, key, file)
