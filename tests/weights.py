"""Comparing Keras weight files bit for bit."""

from pathlib import Path

import h5py
import numpy as np


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset in an HDF5 file (layer weights and optimizer state), by its path."""
    arrays = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: arrays.__setitem__(name, item[()])
            if isinstance(item, h5py.Dataset)
            else None
        )
    return arrays


def assert_bitwise_equal(first: Path, second: Path) -> None:
    """The two weight files hold the same arrays, byte for byte."""
    arrays, expected = h5_arrays(first), h5_arrays(second)
    assert sorted(arrays) == sorted(expected)
    for name in expected:
        assert arrays[name].tobytes() == expected[name].tobytes(), f"{name} differs"
