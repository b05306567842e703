"""Artifacts in an object store, worked on through a local scratch mirror.

Keras, TensorFlow, pyarrow and matplotlib read and write local files, and so does the rest of
trainflow: when the artifacts root is a URL, `mirror_root` gives it a per-process scratch
directory that stands for the root, and this module keeps the two in step:

- `publish(path)`: after a local write commits (`atomic.atomic_path` calls it), upload the file or
  directory to the same key in the store. A file's upload is one PUT, which an object store makes
  visible whole or not at all. A directory (a SavedModel, prepared data, TensorBoard logs) has a
  commit marker, `.committed.json`: set to "writing" first, then the files (a `manifest.json`
  last among them), then set to "committed" with the list of the files, and only then are keys
  of an earlier version that the list does not name deleted.
- `fetch(path)`: before reading, download the key (or every key under it) into the scratch; of a
  directory with a commit marker, only the files its marker lists as committed (none while it is
  being written), so a reader never sees a directory in part.
- `open_committed(path)`: the same committed file read in place, by ranged reads (`ranged.py`),
  with nothing downloaded to the scratch (prepared data, read a row group at a time).
- `remove(path)`, `move(source, target)`: delete or rename locally and in the store (a rename is a
  copy and a delete there).
- `location(path)`: the URL a user sees for a scratch path (`s3://…`), or the path itself.

For a local artifacts root none of this does anything: there is no mirror, and the functions
return at once, so a local run keeps its behaviour and speed.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

from trainflow.storage.ranged import RangedFile, open_object
from trainflow.storage.stores import ObjectStore

MANIFEST = "manifest.json"  # a directory's own description, uploaded last among its files
COMMIT_MARKER = ".committed.json"

_mirrors: dict[Path, ObjectStore] = {}
_by_url: dict[str, Path] = {}
_registering = threading.Lock()
_scratch: Path | None = None


def mirror_root(url: str) -> Path:
    """The local scratch directory standing for the store at `url` in this process (created and
    the store checked the first time: a store the user must fix fails here, before any work)."""
    url = url.rstrip("/")
    with _registering:
        if url not in _by_url:
            store = ObjectStore(url)
            store.check()
            root = _scratch_dir() / hashlib.sha256(url.encode()).hexdigest()[:16]
            root.mkdir(parents=True, exist_ok=True)
            _mirrors[root] = store
            _by_url[url] = root
        return _by_url[url]


def store_of(path: Path) -> tuple[ObjectStore, str] | None:
    """The store mirrored at an ancestor of `path`, and `path`'s key in it; None for local paths."""
    found = _mirror_of(path)
    return None if found is None else (found[1], _key(found[0], path))


def _mirror_of(path: Path) -> tuple[Path, ObjectStore] | None:
    if not _mirrors:  # a local artifacts root: the common case costs one check
        return None
    for root, store in _mirrors.items():
        if path == root or root in path.parents:
            return root, store
    return None


def _key(root: Path, path: Path) -> str:
    return "" if path == root else path.relative_to(root).as_posix()


def location(path: Path) -> str:
    """What a user should be shown for `path`: its store URL when mirrored, else the path."""
    found = store_of(path)
    return str(path) if found is None else found[0].url_of(found[1])


def publish(path: Path) -> None:
    """Upload the committed file or directory `path` to its key (nothing for local paths)."""
    found = store_of(path)
    if found is None:
        return
    store, key = found
    if not path.is_dir():
        store.put_file(path, key)
        return
    files = sorted(
        (child.relative_to(path).as_posix() for child in path.rglob("*") if child.is_file()),
        key=lambda name: (name == MANIFEST, name),
    )
    marker = f"{key}/{COMMIT_MARKER}"
    store.put_bytes(json.dumps({"state": "writing"}).encode(), marker)
    for name in files:
        store.put_file(path / name, f"{key}/{name}")
    store.put_bytes(json.dumps({"state": "committed", "files": files}).encode(), marker)
    wanted = {f"{key}/{name}" for name in files} | {marker}
    for stale in set(store.keys(key)) - wanted:  # left by an earlier version of the directory
        store.remove(stale, tree=False)


def fetch(path: Path, only: str | None = None) -> None:
    """Download the key of `path`, or every key under it (with `only`, those of that file name),
    into the scratch; nothing for local paths, and keys that do not exist leave nothing behind.
    Under a directory with a commit marker only what the marker lists as committed is taken."""
    found = _mirror_of(path)
    if found is None:
        return
    root, store = found
    keys = store.keys(_key(root, path))
    committed = {
        key[: -len(COMMIT_MARKER) - 1]: _committed_files(store, key) or set()
        for key in keys
        if key.rpartition("/")[2] == COMMIT_MARKER
    }
    for child_key in keys:
        name = child_key.rpartition("/")[2]
        if name == COMMIT_MARKER or (only is not None and name != only):
            continue
        if _is_committed(child_key, committed):
            store.get_file(child_key, root / child_key)


def open_committed(path: Path) -> RangedFile:
    """The mirrored file `path` as it is committed in the store, opened for ranged reads; a file
    that is missing, or inside a directory whose commit marker does not list it (the innermost
    marked directory decides, as in `fetch`), raises FileNotFoundError."""
    store, key = store_of(path)
    directory = key
    while "/" in directory:
        directory = directory.rpartition("/")[0]
        listed = _committed_files(store, f"{directory}/{COMMIT_MARKER}")
        if listed is not None:
            if key[len(directory) + 1 :] not in listed:
                raise FileNotFoundError(f"{location(path)} is not committed")
            break
    return open_object(store, key)


def _committed_files(store: ObjectStore, marker_key: str) -> set[str] | None:
    """The files (relative to its directory) the marker at `marker_key` lists as committed; None
    when there is no marker (or it was removed since it was listed: the directory is gone)."""
    try:
        marker = json.loads(store.read_bytes(marker_key))
    except FileNotFoundError:
        return None
    except ValueError:
        return set()
    return set(marker.get("files", [])) if marker.get("state") == "committed" else set()


def _is_committed(key: str, committed: dict[str, set[str]]) -> bool:
    """False for a key inside a directory with a commit marker that does not list it (the
    innermost such directory decides); True for every other key."""
    directories = [d for d in committed if key.startswith(d + "/")]
    if not directories:
        return True
    innermost = max(directories, key=len)
    return key[len(innermost) + 1 :] in committed[innermost]


def fetched(path: Path) -> Path:
    """`path`, after `fetch`ing it."""
    fetch(path)
    return path


def remove(path: Path, tree: bool = True) -> None:
    """Delete `path` (a file or, with `tree`, a directory tree) locally and in the store."""
    found = store_of(path)
    if found is not None:
        found[0].remove(found[1], tree=tree)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def move(source: Path, target: Path) -> None:
    """Rename the file `source` to `target` locally, and in the store by a copy and a delete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    found = store_of(source)
    if found is not None:
        publish(target)
        found[0].remove(found[1], tree=False)


def is_mirrored(path: Path) -> bool:
    return store_of(path) is not None


def _scratch_dir() -> Path:
    """This process's scratch directory under TMPDIR, removed when the process exits."""
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix=f"trainflow-scratch-{os.getpid()}-"))
        atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    return _scratch
