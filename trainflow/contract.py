"""What a classifier says about itself, as trainflow records it: what its outputs are, the form of
the labels its loss takes, and the range of the pixels it expects; and the class probabilities its
outputs stand for, whatever its head.

Plain NumPy and pydantic: read from a Keras model by `trainflow/training/heads.py`, recorded in the
training result, the run record, the JSON summary and the saved model's metadata, and used by
everything downstream (evaluation, reports, the registry's comparison, serving).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

# `probabilities`: class probabilities (softmax) or, for two classes, one sigmoid probability;
# `logits`: unnormalised scores (a linear last layer), or one logit for two classes.
Outputs = Literal["probabilities", "logits"]
# The labels the loss takes: class numbers, one-hot rows, or 0/1 floats of shape (N, 1).
LabelForm = Literal["sparse", "one_hot", "binary"]
# `unit`: pixels scaled to [0, 1]; `raw`: the source's own values (0..255 for 8-bit images).
PixelRange = Literal["unit", "raw"]
PIXEL_RANGES: tuple[PixelRange, ...] = ("unit", "raw")


class ModelContract(BaseModel):
    """How trainflow feeds a model and reads its outputs. The defaults are those of every model
    trained before the contract was recorded: softmax probabilities, class numbers, [0, 1]."""

    model_config = ConfigDict(frozen=True)

    outputs: Outputs = "probabilities"
    labels: LabelForm = "sparse"
    loss: str = "sparse_categorical_crossentropy"
    pixels: PixelRange = "unit"

    @property
    def binary(self) -> bool:
        """One output for two classes: the probability (or logit) of class 1."""
        return self.labels == "binary"

    def describe(self) -> str:
        """One phrase for logs: `logits, loss sparse_categorical_crossentropy, raw pixels`."""
        head = (
            f"one {'probability' if self.outputs == 'probabilities' else 'logit'} for two classes"
        )
        return (
            f"{head if self.binary else self.outputs}, loss {self.loss}, "
            f"{'raw pixels (the source values)' if self.pixels == 'raw' else 'pixels in [0, 1]'}"
        )


def labels_for_loss(labels: np.ndarray, contract: ModelContract, num_classes: int) -> np.ndarray:
    """Class numbers (int64, shape (N,)) in the form the model's loss takes."""
    if contract.labels == "one_hot":
        return np.eye(num_classes, dtype=np.float32)[labels]
    if contract.labels == "binary":
        return labels.astype(np.float32).reshape(-1, 1)
    return labels


def class_probabilities(outputs: np.ndarray, contract: ModelContract) -> np.ndarray:
    """The (N, K) class probabilities the model's (N, K) or (N, 1) outputs stand for: a softmax of
    logits, a sigmoid of one logit, and for one output its complement as class 0's."""
    scores = np.asarray(outputs, dtype=np.float64)
    if contract.binary:
        positive = scores[:, :1]
        if contract.outputs == "logits":
            positive = 0.5 * (1.0 + np.tanh(0.5 * positive))  # the sigmoid, without overflow
        return np.concatenate([1.0 - positive, positive], axis=1).astype(np.float32)
    if contract.outputs == "logits":
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    return scores.astype(np.float32)
