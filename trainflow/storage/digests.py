"""Content digests of files, to verify what was written before it is used."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

# Bytes hashed at a time: the memory a digest takes, whatever the size of the file.
CHUNK_BYTES = 1 << 20


def sha256_of_files(paths: list[Path], root: Path | None = None) -> str:
    """One sha256 over the names and contents of `paths`, in order; the names are the paths
    relative to `root` when it is given, else the file names."""
    digest = hashlib.sha256()
    for path in paths:
        name = path.name if root is None else path.relative_to(root).as_posix()
        with path.open("rb") as stream:
            _add(digest, name, stream)
    return digest.hexdigest()


def sha256_of_stream(name: str, stream: BinaryIO) -> str:
    """`sha256_of_files` of one file named `name` whose content `stream` gives, read a chunk at
    a time (e.g. an object in a store, read in place)."""
    digest = hashlib.sha256()
    _add(digest, name, stream)
    return digest.hexdigest()


def sha256_of_bytes(name: str, content: bytes) -> str:
    """`sha256_of_files` of one file named `name` holding `content`, without the file."""
    return hashlib.sha256(name.encode() + b"\0" + content).hexdigest()


def _add(digest, name: str, stream: BinaryIO) -> None:
    digest.update(name.encode() + b"\0")
    while chunk := stream.read(CHUNK_BYTES):
        digest.update(chunk)
