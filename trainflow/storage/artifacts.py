"""The one interface to where artifacts live: `Storage`, a local directory or an object store.

Every artifact is read and written through the `Storage` of its artifacts root, which
`ArtifactPaths`, `RunPaths` and `DataPaths` carry (`paths.storage`). An artifact is named by its
path under `storage.root`, the root's local face: for a local root the directory itself; for a
root in an object store (`s3://bucket/prefix`) this process's scratch directory standing for it,
whose files are local copies. `key(path)` is the name every machine shares (relative to the root),
and `location(path)` the one a user is shown (a path, or the object's URL).

- Writes are all-or-nothing: `write_json`, `write_table`, `write_bytes` and `writing` (a
  temporary to write a file or directory to, committed when the block ends). A directory is
  committed whole: renamed into place locally; in a store, uploaded under a commit marker written
  last. `commit` does the same for what a library wrote in place (TensorBoard's logs, the best
  epoch's weights `ModelCheckpoint` writes).
- Reads see only what is committed: `local_copy` (a file or directory as a real file for Keras,
  TensorFlow or pyarrow), `refresh` (a directory's committed contents, e.g. before listing it),
  `open_for_reading` (a file read where it lies: in a store by ranged reads, never downloaded).
- `remove`, `move`, and `lock`: an flock locally, a fenced lease in a store.
- Fencing: in a store, every write under a directory guarded by a lease this process holds is made
  only while the lease is valid (`check_owner` asks without writing), and `owner_generation`
  names the lease's generation for manifests and records.

For a local root the store-only parts cost nothing, so a local run keeps its behaviour and speed.
The modules behind this one (`mirror`, `atomic`, `stores`, `leases`, `fencing`) are the storage
room's own: nothing outside `trainflow.storage` imports them (import-linter checks it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from trainflow.storage import atomic, fencing, mirror
from trainflow.storage.locations import is_url, local_path_of
from trainflow.storage.locks import HeldLock, LockHeld, take_lock

__all__ = ["HeldLock", "LockHeld", "Storage"]

_by_root: dict[Path, Storage] = {}
_creating = threading.Lock()


class Storage:
    """The artifacts under one root; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.is_remote = mirror.store_of(root) is not None

    @classmethod
    def at(cls, location: str | Path) -> Storage:
        """The storage at `location`: a directory (anchored at its absolute path, so that a later
        change of directory moves nothing) or an object store URL (checked the first time: a store
        the user must fix fails here, before any work)."""
        if is_url(location):
            return cls.of_root(mirror.mirror_root(str(location)))
        return cls.of_root(local_path_of(location).expanduser().resolve())

    @classmethod
    def of_root(cls, root: Path) -> Storage:
        """The storage whose root's local face is `root` (one object per root in a process)."""
        with _creating:
            if root not in _by_root:
                _by_root[root] = cls(root)
            return _by_root[root]

    def key(self, path: Path) -> str:
        """`path`'s name in the storage, shared by every machine: relative to the root."""
        return path.relative_to(self.root).as_posix()

    def path(self, key: str) -> Path:
        """The local face of `key`."""
        return self.root / key

    def location(self, path: Path) -> str:
        """What a user is shown for `path`: its URL in a store, or the path."""
        return mirror.location(path)

    # Writes

    @contextmanager
    def writing(self, path: Path) -> Iterator[Path]:
        """A temporary sibling of `path` to write a file or directory to, committed as `path` when
        the block ends without error (and removed otherwise, leaving `path` as it was)."""
        with atomic.atomic_path(path) as temporary:
            yield temporary

    def write_json(self, path: Path, data: Any) -> None:
        atomic.write_json(path, data)

    def write_table(self, path: Path, table: Any) -> None:
        """Write the pyarrow `table` as Parquet."""
        atomic.write_parquet(table, path)

    def write_bytes(self, path: Path, content: bytes) -> None:
        """Write `content`; into a store straight from memory, with no local copy."""
        atomic.write_bytes(path, content)

    def commit(self, path: Path) -> None:
        """Commit the file or directory a library wrote in place at `path` (into a store: upload
        it, a directory under its commit marker; locally it is already where it belongs)."""
        mirror.publish(path)

    def remove(self, path: Path) -> None:
        """Delete the file or directory tree `path` (a missing one is not an error)."""
        mirror.remove(path)

    def remove_file(self, path: Path) -> None:
        """Delete the one file `path` (in a store: one request, where a tree needs a listing)."""
        mirror.remove(path, tree=False)

    def move(self, source: Path, target: Path) -> None:
        """Rename the file `source` to `target` (in a store: a copy, then a delete)."""
        mirror.move(source, target)

    # Reads

    def local_copy(self, path: Path) -> Path:
        """`path` as a real local file or directory holding what is committed there now (for
        the libraries that read files); a missing one is missing locally too."""
        mirror.fetch(path)
        return path

    def refresh(self, path: Path, only: str | None = None) -> None:
        """Bring the committed contents of the directory `path` (with `only`, its files of that
        name) to the local face, e.g. before listing it."""
        mirror.fetch(path, only=only)

    @contextmanager
    def open_for_reading(self, path: Path) -> Iterator[BinaryIO]:
        """The committed file `path` as a seekable binary file for the block, read where it lies:
        locally the file itself, opened by pyarrow (whose Parquet reader then reads it as fast as
        from its path); in a store the object by HTTP ranged reads, a bounded read-ahead at a
        time, each retried on a transient fault, with nothing downloaded to the local face. A
        missing file, or one its directory's commit marker does not list, raises
        FileNotFoundError."""
        if self.is_remote:
            opened = mirror.open_committed(path)
        else:
            import pyarrow  # only the readers of files in place pay for the import

            opened = pyarrow.OSFile(str(path))
        with opened as file:
            yield file

    # Ownership

    def lock(self, lock_path: Path, guarding: Path | None = None, wait: bool = False) -> HeldLock:
        """Take the lock at `lock_path`, or raise `LockHeld` naming its holder (with `wait`,
        wait for it). In a store the lock fences the writes under `guarding`."""
        return take_lock(lock_path, guarding, wait)

    @contextmanager
    def locked(self, lock_path: Path, guarding: Path | None = None) -> Iterator[HeldLock]:
        """Hold the lock at `lock_path` for the block, waiting for it first."""
        held = self.lock(lock_path, guarding, wait=True)
        try:
            yield held
        finally:
            held.release()

    def check_owner(self, path: Path) -> None:
        """Raise `OwnershipLostError` if a write to `path` now would not be fenced by a valid
        lease of this process (nothing to check locally, where flocks cannot be lost)."""
        if self.is_remote:
            fencing.check_write(self.location(path))

    def owner_generation(self, path: Path) -> int | None:
        """The generation of this process's lease guarding `path` (None locally, or unguarded)."""
        return fencing.generation_of(self.location(path)) if self.is_remote else None
