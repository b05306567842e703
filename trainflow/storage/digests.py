"""Content digests of files, to verify what was written before it is used."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of_files(paths: list[Path], root: Path | None = None) -> str:
    """One sha256 over the names and contents of `paths`, in order; the names are the paths
    relative to `root` when it is given, else the file names."""
    digest = hashlib.sha256()
    for path in paths:
        name = path.name if root is None else path.relative_to(root).as_posix()
        digest.update(name.encode() + b"\0")
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def sha256_of_bytes(name: str, content: bytes) -> str:
    """`sha256_of_files` of one file named `name` holding `content`, without the file."""
    return hashlib.sha256(name.encode() + b"\0" + content).hexdigest()
