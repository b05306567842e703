"""The model architectures, built and compiled the same way wherever a model is needed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainflow.config import ModelKind
from trainflow.errors import UnsafeModelError, UserInputError

if TYPE_CHECKING:
    import keras


def build_model(kind: ModelKind, image_shape: tuple[int, int], num_classes: int) -> keras.Model:
    """Build and compile `mlp` or `cnn`, with its optimizer and metrics built so that saved state
    loads into them.

    `mlp` is the classic Flatten -> Dense(128, relu) -> Dense(10, softmax); `cnn` is two
    convolution/pooling blocks, dropout and a softmax layer.
    """
    import keras

    if kind == "mlp":
        layers = [
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    elif kind == "cnn":
        layers = [
            keras.layers.Reshape((*image_shape, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    else:
        raise UserInputError(f"model {kind!r} is not one of mlp, cnn; choose --model mlp or cnn")
    # Sequential, as in the textbook examples, so weights load into a model built there by hand.
    model = keras.Sequential([keras.Input(shape=image_shape), *layers], name=kind)
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # load_weights silently skips optimizer state unless the optimizer already has its variables,
    # and a resumed epoch's metric sums can only be restored into metrics that exist: build both.
    model.optimizer.build(model.trainable_variables)
    probe = np.zeros((1, *image_shape), dtype=np.float32)
    model.compute_metrics(probe, np.zeros(1, dtype=np.int64), model(probe), sample_weight=None)
    model.reset_metrics()
    return model


def load_saved_model(path: Path) -> keras.Model:
    """`keras.models.load_model(path, safe_mode=True)`, with a refused unsafe model (a `Lambda`
    layer or other serialized Python code, which loading would run) as `UnsafeModelError`."""
    import keras

    try:
        return keras.models.load_model(path, safe_mode=True)
    except ValueError as error:
        if "safe_mode" not in str(error):
            raise
        raise UnsafeModelError(
            f"{path} holds Python code (a Lambda layer or a lambda) that loading would run; "
            "trainflow loads models in Keras's safe mode and refuses it. Use a model trainflow "
            "saved, or rebuild yours without Lambda layers"
        ) from error
