"""The npz format: NumPy arrays x_train, y_train, x_test, y_test in one archive."""

from __future__ import annotations

import lzma
import zipfile
import zlib
from pathlib import Path

import numpy as np

from trainflow.data.raw import RawSplit
from trainflow.errors import DataSourceError, error_reason

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


# What reading an npz can raise for a damaged or hostile file: zipfile raises RuntimeError for an
# encrypted member and NotImplementedError (a RuntimeError) for an unknown compression method, and
# MemoryError comes from a .npy header that declares a huge array.
NPZ_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    zipfile.BadZipFile,
    RuntimeError,
    MemoryError,
)


def read_npz(path: Path) -> dict[str, RawSplit]:
    """Read an npz with arrays x_train, y_train, x_test, y_test (pickles are refused)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            raise DataSourceError(
                f"{path}: a single .npy array, not an npz archive; save the arrays "
                f"{', '.join(NPZ_KEYS)} together with numpy.savez"
            )
        with loaded as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataSourceError(
                    f"{path}: missing arrays {', '.join(missing)}; an npz source needs "
                    f"{', '.join(NPZ_KEYS)} (found {', '.join(archive.files) or 'none'})"
                )
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except NPZ_READ_ERRORS as error:
        raise DataSourceError(f"{path}: not a readable npz file ({error_reason(error)})") from error
    # numpy hands back the raw bytes of a member that is not in .npy format.
    not_arrays = [key for key, array in arrays.items() if not isinstance(array, np.ndarray)]
    if not_arrays:
        raise DataSourceError(
            f"{path}: {', '.join(not_arrays)} not in .npy format; save the arrays with numpy.savez"
        )
    return {
        split: RawSplit(
            arrays[f"x_{split}"], arrays[f"y_{split}"], f"{path} (x_{split}, y_{split})"
        )
        for split in ("train", "test")
    }
