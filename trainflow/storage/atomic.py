"""Writes that are all-or-nothing: a reader sees the old file or the complete new one, never a part.

Keras writes `.keras` and `.h5` files in place, so a kill during a write leaves a truncated file under
the final name. Everything here writes under a temporary name that keeps the suffixes Keras insists
on, flushes and fsyncs it, and renames it into place; when the artifacts root is an object store,
the committed file is then uploaded (`mirror.publish`), so the store never holds a part either.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainflow.errors import as_storage_error
from trainflow.storage.mirror import publish, store_of

# Temporaries being written: what is written inside one is committed (and uploaded) with it.
_staging: set[Path] = set()


def temporary_sibling(path: Path) -> Path:
    """`dir/model.weights.h5` -> `dir/model.tmp-<pid>.weights.h5`: same directory, same suffixes."""
    base, dot, suffixes = path.name.partition(".")
    return path.with_name(f"{base}.tmp-{os.getpid()}{dot}{suffixes}")


def fsync_path(path: Path) -> None:
    """Flush a file, or every file in a directory tree, and the directory entries, to disk."""
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                _fsync(child)
        _fsync(path)
    else:
        _fsync(path)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write a file or directory to; commit it on success.

    On an exception the temporary is removed and `path` is left as it was; a full or read-only
    disk raises `StorageError` naming `path`.
    """
    temporary = temporary_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove(temporary)
        _staging.add(temporary)
        yield temporary
        fsync_path(temporary)
        _replace(temporary, path)
        _fsync(path.parent)
        if not _is_staged(path):  # a file inside a directory being written goes with it
            publish(path)  # an artifacts root in an object store: upload what was just committed
    except OSError as error:
        raise as_storage_error(error, path) or error from error
    finally:
        _staging.discard(temporary)
        _remove(temporary)


def _is_staged(path: Path) -> bool:
    return any(staging in path.parents for staging in _staging)


def write_parquet(table: Any, path: Path) -> None:
    """Write the pyarrow `table` as Parquet, atomically."""
    import pyarrow.parquet as pq  # only the writers of tables pay for the import

    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def write_bytes(path: Path, content: bytes) -> None:
    """Write `content` to `path`, atomically. Under an artifacts root in an object store it goes
    from memory to the store in one PUT, with no local copy (`fetch` brings it when it is read)."""
    found = store_of(path)
    if found is not None:
        found[0].put_bytes(content, found[1])
        return
    with atomic_path(path) as temporary:
        temporary.write_bytes(content)


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _replace(source: Path, target: Path) -> None:
    # os.replace cannot put a directory over a non-empty one: move the old one aside first.
    if source.is_dir() and target.exists():
        retired = temporary_sibling(target.with_name(target.name + "-old"))
        os.replace(target, retired)
        os.replace(source, target)
        shutil.rmtree(retired)
    else:
        os.replace(source, target)


def _remove(path: Path) -> None:
    # Only what exists: on a read-only file system even unlinking a missing file fails (EROFS),
    # and that error would hide the one being reported.
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()
