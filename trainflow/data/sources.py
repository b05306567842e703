"""Where a dataset comes from: finding a source's files, the digest that identifies them, and
reading them with the right reader.

`keras.datasets` sources are downloaded (or taken from Keras's cache); file sources are read by
`idx.py`, `npz.py`, `parquet.py` and `images.py`. A source at a URL is first brought into this
process's local copy of it (`remote.py`) and then found, digested and read there like a local one,
with its URL in every message.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from trainflow.data.classes import class_names_file
from trainflow.data.idx import IDX_FILE_PATTERN, read_idx_directory
from trainflow.data.images import class_folders, image_files, read_image_directory
from trainflow.data.npz import read_npz
from trainflow.data.parquet import read_parquet_directory
from trainflow.data.raw import RawSplit
from trainflow.data.remote import fetch_copy, named_by_url, url_named
from trainflow.datasets import DATASET_HELP, DataSource
from trainflow.errors import DataSourceError, DownloadError
from trainflow.storage.digests import sha256_of_files


def locate_source_files(source: DataSource) -> list[Path]:
    """The local files a source reads, sorted; empty for `keras.datasets` sources. For a URL
    source, they are those of this process's copy, brought in step with the store first.

    Raises `DataSourceError` when the path or URL does not exist or holds no recognisable files
    (and the store's `StoreError` when the store itself cannot be used).
    """
    if source.location is None:
        return []
    if source.url is None:
        return _files_of(source, source.location)
    fetch_copy(source)
    with named_by_url(source):
        return _files_of(source, source.location)


def _files_of(source: DataSource, location: Path) -> list[Path]:
    if not location.exists():
        raise DataSourceError(
            f"dataset path {location} does not exist; give an existing path as {DATASET_HELP}"
        )
    if source.kind == "npz":
        if not location.is_file():
            raise DataSourceError(f"npz:{location} is not a file; give the path of an .npz file")
        return [location]
    if not location.is_dir():
        raise DataSourceError(f"{source.kind}:{location} is not a directory; give a directory")
    if source.kind == "idx":
        files = sorted(path for path in location.iterdir() if IDX_FILE_PATTERN.match(path.name))
        expected = "IDX files named like t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
    elif source.kind == "parquet":
        files = sorted(location.glob("*.parquet"))
        expected = "train.parquet and test.parquet (optionally validation.parquet)"
    else:
        return _image_folder_files(location)
    if not files:
        raise DataSourceError(f"{source} holds no recognisable files; expected {expected}")
    return files


def _image_folder_files(root: Path) -> list[Path]:
    folders = class_folders(root)
    if len(folders) < 2:
        raise DataSourceError(
            f"images:{root} has {len(folders)} class folders; expected one subfolder per class "
            "(at least two) of PNG or JPEG files"
        )
    files = []
    for folder in folders:
        found = image_files(folder)
        if not found:
            raise DataSourceError(
                f"{folder}: class folder without PNG or JPEG files; add its images or remove it"
            )
        files += found
    return files


def source_sha256(source: DataSource, files: list[Path]) -> str:
    """The digest of a file source's bytes, and of its class names file if it has one. An image
    folder's files count with their class folder, so that moving an image to another class changes
    the digest."""
    names_file = class_names_file(source)
    extra = [names_file] if names_file is not None and names_file.is_file() else []
    root = source.location if source.kind == "images" else None
    return sha256_of_files([*files, *extra], root=root)


def read_source(
    source: DataSource, files: list[Path], image_size: tuple[int, int] | None = None
) -> dict[str, RawSplit]:
    """Open the raw splits of `source` from `files` (as found by `locate_source_files`): their
    labels are read, their images as their chunks are; an image folder's images are resized to
    `image_size` (height, width) if given."""
    if source.url is None:
        return _read_files(source, files, image_size)
    with named_by_url(source):
        splits = _read_files(source, files, image_size)
    # Later checks quote a split's origin: the URL, not the copy's path.
    return {
        name: dataclasses.replace(split, origin=url_named(source, split.origin))
        for name, split in splits.items()
    }


def _read_files(
    source: DataSource, files: list[Path], image_size: tuple[int, int] | None
) -> dict[str, RawSplit]:
    if source.kind in ("mnist", "fashion_mnist"):
        return read_keras_dataset(source.kind)
    if source.kind == "idx":
        return read_idx_directory(files)
    if source.kind == "npz":
        return read_npz(files[0])
    if source.kind == "parquet":
        return read_parquet_directory(files)
    return read_image_directory(source.location, image_size)


def read_keras_dataset(name: str) -> dict[str, RawSplit]:
    """Load `keras.datasets.<name>` through Keras's own download-and-cache path, into memory."""
    from keras import datasets

    try:
        (x_train, y_train), (x_test, y_test) = getattr(datasets, name).load_data()
    except Exception as error:  # Keras raises bare Exception subclasses for every network failure.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DownloadError(
            f"could not download {name} through keras.datasets ({reason}); without network, "
            "use a local copy: --dataset idx:DIR, npz:FILE, parquet:DIR or images:DIR"
        ) from error
    origin = f"keras.datasets.{name}"
    return {
        "train": RawSplit.of_arrays(x_train, y_train, f"{origin} (train)"),
        "test": RawSplit.of_arrays(x_test, y_test, f"{origin} (test)"),
    }
