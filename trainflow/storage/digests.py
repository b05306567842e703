"""Content digests of files, to verify what was written before it is used."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of_files(paths: list[Path]) -> str:
    """One sha256 over the names and contents of `paths`, in order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
