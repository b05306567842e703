"""Scoring a model on prepared data: class probabilities and the loss, in one prediction pass."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from trainflow.config import ModelRecipe
from trainflow.data.prepared import read_split
from trainflow.training.models import load_saved_model

EVALUATION_BATCH_SIZE = 256


def accuracy_on(model_path: Path, test_split: Path, recipe: ModelRecipe | None = None) -> float:
    """Test accuracy of the saved `.keras` model at `model_path` (built by `recipe`, whose builder
    module registers its custom layers) on a prepared test split."""
    images, labels = read_split(test_split)
    model = load_saved_model(model_path, recipe)
    _, probabilities = loss_and_probabilities(model, images, labels)
    return float((probabilities.argmax(axis=1) == labels).mean())


def loss_and_probabilities(
    model: keras.Model, images: np.ndarray, labels: np.ndarray
) -> tuple[float, np.ndarray]:
    """The mean test loss and the class probabilities, from one pass over the test images (the
    loss is Keras's own sparse categorical cross-entropy of those probabilities, as `evaluate`
    computes it, without a second pass)."""
    probabilities = model.predict(images, batch_size=EVALUATION_BATCH_SIZE, verbose=0)
    losses = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    return float(np.mean(keras.ops.convert_to_numpy(losses), dtype=np.float64)), probabilities
