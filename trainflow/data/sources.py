"""Where a dataset comes from: finding a source's files and reading them with the right reader.

`keras.datasets` sources are downloaded (or taken from Keras's cache); file sources are read by
`readers.py`.
"""

from __future__ import annotations

from pathlib import Path

from trainflow.config import DATASET_HELP, DataSource
from trainflow.data.readers import (
    IDX_FILE_PATTERN,
    RawSplit,
    read_idx_directory,
    read_npz,
    read_parquet_directory,
)
from trainflow.errors import DataSourceError, DownloadError


def locate_source_files(source: DataSource) -> list[Path]:
    """The files a local source reads, sorted; empty for `keras.datasets` sources.

    Raises `DataSourceError` when the path does not exist or holds no recognisable files.
    """
    if source.location is None:
        return []
    location = source.location
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
    else:
        files = sorted(location.glob("*.parquet"))
        expected = "train.parquet and test.parquet (optionally validation.parquet)"
    if not files:
        raise DataSourceError(f"{source} holds no recognisable files; expected {expected}")
    return files


def read_source(source: DataSource, files: list[Path]) -> dict[str, RawSplit]:
    """Read the raw splits of `source` from `files` (as found by `locate_source_files`)."""
    if source.kind in ("mnist", "fashion_mnist"):
        return read_keras_dataset(source.kind)
    if source.kind == "idx":
        return read_idx_directory(files)
    if source.kind == "npz":
        return read_npz(files[0])
    return read_parquet_directory(files)


def read_keras_dataset(name: str) -> dict[str, RawSplit]:
    """Load `keras.datasets.<name>` through Keras's own download-and-cache path."""
    from keras import datasets

    try:
        (x_train, y_train), (x_test, y_test) = getattr(datasets, name).load_data()
    except Exception as error:  # Keras raises bare Exception subclasses for every network failure.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DownloadError(
            f"could not download {name} through keras.datasets ({reason}); without network, "
            "use a local copy: --dataset idx:DIR, npz:FILE or parquet:DIR"
        ) from error
    origin = f"keras.datasets.{name}"
    return {
        "train": RawSplit(x_train, y_train, f"{origin} (train)"),
        "test": RawSplit(x_test, y_test, f"{origin} (test)"),
    }
