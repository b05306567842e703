"""Sources in an object store: this process's local copy of a URL source, for the readers.

`fetch_copy` brings the copy at `source.location` in step with the store: it downloads the files
the format needs (found by the rules `sources.py` applies to a local directory, plus the
`classes.json` beside them), each whole or not at all, skips those whose copy is still current
(same ETag or size and modification time), and removes those the store no longer has. The
readers and the digest then work on the copy as on any local directory, so the same files give
the same fingerprint wherever they are kept. `named_by_url` puts the URL back into their error
messages in place of the copy's path.

A missing prefix or object is a `DataSourceError` naming the URL; a missing bucket, refused
credentials or an endpoint that does not answer are the store's own one-line `StoreError`s.
"""

from __future__ import annotations

import atexit
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainflow.data.classes import CLASS_NAMES_FILE
from trainflow.data.idx import IDX_FILE_PATTERN
from trainflow.data.images import IMAGE_SUFFIXES
from trainflow.datasets import DataSource
from trainflow.errors import DataSourceError
from trainflow.storage.stores import ObjectStore

# The version of each file this process downloaded (None: the store gives none, download again).
_fetched: dict[Path, str | None] = {}
_copy_roots: set[Path] = set()
_fetching = threading.Lock()


def copy_root(source: DataSource) -> Path:
    """The directory of `source`'s local copy (the one that holds the file, for npz)."""
    return source.location.parent if source.kind == "npz" else source.location


def root_url(source: DataSource) -> str:
    """The URL that `copy_root(source)` stands for."""
    url = source.url.rstrip("/")
    return url.rpartition("/")[0] if source.kind == "npz" else url


def fetch_copy(source: DataSource) -> None:
    """Bring the local copy of the URL source `source` in step with the store (see the module
    docstring). Raises `DataSourceError` when the URL holds nothing to read."""
    if source.kind == "npz" and "/" not in source.url.split("://", 1)[1].strip("/"):
        raise DataSourceError(f"{source}: give the URL of an .npz file in a bucket or folder")
    root, url = copy_root(source), root_url(source)
    store = ObjectStore(url)
    store.check()  # a missing bucket or refused credentials: the store's one-line error
    folders: set[str] = set()
    if source.kind == "npz":
        wanted = _npz_objects(store, source)
    else:
        objects = _objects(store)
        if not objects:
            raise DataSourceError(
                f"{source}: no objects under {source.url}; give the URL of an existing prefix"
            )
        wanted = {key: info for key, info in objects.items() if _needed(source.kind, key)}
        if source.kind == "images":  # as on disk, a folder without images is a class folder too
            folders = {key.split("/")[0] for key in objects if "/" in key}
            folders = {folder for folder in folders if not folder.startswith(".")}
    with _fetching:
        _make_private_directory(root)
        for key, info in wanted.items():
            _download(store, key, info, root / key, source)
        _prune(root, set(wanted), folders)


@contextmanager
def named_by_url(source: DataSource) -> Iterator[None]:
    """Re-raise a `DataSourceError` met reading the copy with the URL in place of its path."""
    try:
        yield
    except DataSourceError as error:
        raise type(error)(url_named(source, str(error))) from error


def url_named(source: DataSource, text: str) -> str:
    """`text` with the copy's path of `source` replaced by its URL."""
    return text.replace(str(copy_root(source)), root_url(source))


def _needed(kind: str, key: str) -> bool:
    # What `locate_source_files` reads in a local directory: an image in a class folder, or a file
    # of the directory itself (not of a subdirectory) with the format's names.
    folder, _, name = key.rpartition("/")
    if kind == "images":
        in_class_folder = bool(folder) and "/" not in folder and not folder.startswith(".")
        return in_class_folder and Path(name).suffix.lower() in IMAGE_SUFFIXES
    if folder:
        return False
    if name == CLASS_NAMES_FILE:
        return True
    return bool(IDX_FILE_PATTERN.match(name)) if kind == "idx" else name.endswith(".parquet")


def _objects(store: ObjectStore) -> dict[str, dict]:
    """Every object under the store's root by key, with what the store says of it."""
    # fsspec's own form of the root (memory:// adds a leading "/"), so keys are cut right.
    base = store.fs._strip_protocol(store.url).rstrip("/")
    try:
        found = store.call(lambda: store.fs.find(base, detail=True), f"list {store.url}")
    except FileNotFoundError:
        return {}
    return {
        path[len(base) + 1 :]: info
        for path, info in found.items()
        if path.startswith(f"{base}/") and info.get("type") != "directory"
    }


def _npz_objects(store: ObjectStore, source: DataSource) -> dict[str, dict]:
    name = source.location.name
    infos = {}
    for key in (name, CLASS_NAMES_FILE):
        try:
            infos[key] = store.call(lambda key=key: store.fs.info(store.path(key)), f"read {key}")
        except FileNotFoundError:
            continue
    if infos.get(name, {}).get("type") != "file":
        missing = name not in infos
        raise DataSourceError(
            f"{source}: {'no such object' if missing else 'a prefix, not an object'}; give the URL "
            "of an .npz file"
        )
    return infos


def _download(store: ObjectStore, key: str, info: dict, local: Path, source: DataSource) -> None:
    version = _version(info)
    current = (
        version is not None
        and _fetched.get(local) == version
        and local.is_file()
        and local.stat().st_size == info.get("size")
    )
    if current:
        return
    try:
        store.get_file(key, local)
    except FileNotFoundError:  # removed from the store since it was listed
        raise DataSourceError(
            f"{source}: {store.url_of(key)} disappeared while it was read; run again"
        ) from None
    _fetched[local] = version


def _version(info: dict) -> str | None:
    # An ETag changes with the content; a time of writing with each write. A size alone does not
    # tell two versions of fixed-size data apart, so without either the file is downloaded again.
    stamp = info.get("ETag") or info.get("LastModified") or info.get("mtime") or info.get("created")
    return None if stamp is None else f"{info.get('size')}:{stamp}"


def _prune(root: Path, files: set[str], folders: set[str]) -> None:
    """Remove from the copy what the store no longer has; keep the class folders it has."""
    for folder in folders:
        (root / folder).mkdir(exist_ok=True)
    for path in sorted(root.rglob("*"), reverse=True):  # a folder's files before the folder
        relative = path.relative_to(root).as_posix()
        if path.is_dir() and not path.is_symlink():
            if relative not in folders and not any(path.iterdir()):
                path.rmdir()
        elif relative not in files:
            path.unlink()
            _fetched.pop(path, None)


def _make_private_directory(root: Path) -> None:
    # The copies live under a predictable name in a shared temporary directory: refuse one that
    # another user made (or a symbolic link), and keep it readable by this user only.
    parent = root.parent
    parent.mkdir(mode=0o700, exist_ok=True)
    if parent.is_symlink() or parent.stat().st_uid != os.getuid():
        raise DataSourceError(
            f"{parent} belongs to another user; remove it or set TMPDIR to a directory of yours"
        )
    root.mkdir(mode=0o700, exist_ok=True)
    if root not in _copy_roots:
        if not _copy_roots:
            atexit.register(_remove_copies)
        _copy_roots.add(root)


def _remove_copies() -> None:
    for root in _copy_roots:
        shutil.rmtree(root, ignore_errors=True)
        try:
            root.parent.rmdir()  # the process's directory, once its last copy is gone
        except OSError:
            pass
