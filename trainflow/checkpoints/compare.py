"""Comparing Keras weight files bit for bit."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset in an HDF5 file (layer weights and optimizer state), by its path."""
    arrays = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: (
                arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return arrays


def differing_arrays(first: Path, second: Path) -> list[str]:
    """Names of the arrays that are not byte for byte the same in both files (or only in one)."""
    arrays, others = h5_arrays(first), h5_arrays(second)
    return sorted(
        name
        for name in set(arrays) | set(others)
        if name not in arrays
        or name not in others
        or arrays[name].dtype != others[name].dtype
        or arrays[name].tobytes() != others[name].tobytes()
    )
