"""Scoring a model on prepared data: class probabilities and the loss, in one prediction pass."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from trainflow.contract import ModelContract, class_probabilities, labels_for_loss
from trainflow.data.prepared import read_split
from trainflow.recipe import ModelRecipe
from trainflow.results import ModelMetadata
from trainflow.training.models import load_saved_model

EVALUATION_BATCH_SIZE = 256


def accuracy_on(
    model_path: Path,
    test_split: Path,
    contract: ModelContract,
    recipe: ModelRecipe | None = None,
) -> float:
    """Test accuracy of the saved `.keras` model at `model_path` (built by `recipe`, whose builder
    module registers its custom layers, and fed and read as `contract` says) on a prepared test
    split."""
    images, labels = read_split(test_split, contract.pixels)
    model = load_saved_model(model_path, recipe)
    _, probabilities = loss_and_probabilities(model, images, labels, contract)
    return float((probabilities.argmax(axis=1) == labels).mean())


def saved_contract(metadata: Path) -> ModelContract:
    """The contract a saved model's metadata file records; the default one (softmax
    probabilities, pixels in [0, 1]) for a model saved before trainflow recorded it."""
    if not metadata.is_file():
        return ModelContract()
    return ModelMetadata.model_validate_json(metadata.read_text()).contract


def loss_and_probabilities(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, contract: ModelContract
) -> tuple[float, np.ndarray]:
    """The mean test loss and the (N, K) class probabilities, from one pass over the test images
    (in the pixel range of `contract`). The loss is the model's own compiled loss of its outputs
    and the labels in the form it takes, as `evaluate` computes it, without a second pass."""
    outputs = model.predict(images, batch_size=EVALUATION_BATCH_SIZE, verbose=0)
    probabilities = class_probabilities(outputs, contract)
    loss = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
    targets = labels_for_loss(labels, contract, probabilities.shape[1])
    losses = keras.ops.convert_to_numpy(loss(targets, outputs))
    return float(np.mean(losses, dtype=np.float64)), probabilities
