"""The byte layout of Keras's `.weights.h5` file for a model, learnt once per run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import keras
import numpy as np


def checkpoint_variables(model: keras.Model) -> list:
    """The variables a checkpoint holds, in `WeightsFileLayout`'s order: model, then optimizer."""
    return [*model.variables, *model.optimizer.variables]


class WeightsFileLayout:
    """Where each variable of a model and its optimizer goes in the `.weights.h5` file that Keras
    writes for it, learnt once; then such a file is made from plain arrays by copying bytes, in
    well under a millisecond, instead of by Keras's per-object saving code (10-15 ms of Python per
    checkpoint, which also held up the training thread).

    The layout is learnt by saving a model of the same architecture whose variable number i holds
    the value i+1 everywhere: each dataset of that file then names its variable, and HDF5 says
    where in the file its bytes are. Every checkpoint is that file with the datasets' bytes
    replaced, so Keras loads it as its own.
    """

    def __init__(self, shadow: keras.Model) -> None:
        variables = checkpoint_variables(shadow)
        for index, variable in enumerate(variables):
            variable.assign(np.full(variable.shape, index + 1, dtype=variable.dtype))
        self.variable_count = len(variables)
        # (byte offset, dtype, shape, variable index) of every dataset in the file
        self.spans: list[tuple[int, np.dtype, tuple[int, ...], int]] = []
        with tempfile.TemporaryDirectory() as directory:
            template = Path(directory) / "layout.weights.h5"
            shadow.save_weights(template)
            self.template = template.read_bytes()
            with h5py.File(template, "r") as handle:
                handle.visititems(self._learn_span)

    def _learn_span(self, name: str, item: object) -> None:
        if not isinstance(item, h5py.Dataset) or item.size == 0:
            return
        values = np.asarray(item[()])
        index = int(values.flat[0]) - 1
        offset = item.id.get_offset()
        if not 0 <= index < self.variable_count or not (values == index + 1).all():
            raise ValueError(f"cannot tell which variable dataset {name} of the weights file holds")
        if offset is None or item.compression is not None or item.chunks is not None:
            raise ValueError(f"dataset {name} of the weights file is not stored as plain bytes")
        self.spans.append((offset, item.dtype, item.shape, index))

    def content(self, values: list[np.ndarray]) -> bytes:
        """The file's bytes for `values`: the variables' arrays, in the order the layout learnt."""
        if len(values) != self.variable_count:
            raise ValueError(
                f"{len(values)} arrays for a layout of {self.variable_count} variables"
            )
        content = bytearray(self.template)
        for offset, dtype, shape, index in self.spans:
            data = np.ascontiguousarray(values[index], dtype=dtype).reshape(shape).tobytes()
            content[offset : offset + len(data)] = data
        return bytes(content)
