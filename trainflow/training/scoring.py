"""Scoring a model on prepared data: class probabilities and the loss, in one prediction pass."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from trainflow.contract import ModelContract, class_probabilities, labels_for_loss
from trainflow.data.prepared import PreparedSplit
from trainflow.paths import DataPaths
from trainflow.recipe import ModelRecipe
from trainflow.results import ModelMetadata
from trainflow.training.inputs import prediction_batches
from trainflow.training.models import load_saved_model


def accuracy_on(
    model_path: Path,
    data: DataPaths,
    contract: ModelContract,
    recipe: ModelRecipe | None = None,
) -> float:
    """Test accuracy of the saved `.keras` model at `model_path` (built by `recipe`, whose builder
    module registers its custom layers, and fed and read as `contract` says) on the test split of
    the prepared data at `data`."""
    split = PreparedSplit.of(data, "test")
    model = load_saved_model(model_path, recipe)
    _, probabilities = loss_and_probabilities(model, split, contract)
    return float((probabilities.argmax(axis=1) == split.labels()).mean())


def saved_contract(metadata: Path) -> ModelContract:
    """The contract a saved model's metadata file records; the default one (softmax
    probabilities, pixels in [0, 1]) for a model saved before trainflow recorded it."""
    if not metadata.is_file():
        return ModelContract()
    return ModelMetadata.model_validate_json(metadata.read_text()).contract


def loss_and_probabilities(
    model: keras.Model, split: PreparedSplit, contract: ModelContract
) -> tuple[float, np.ndarray]:
    """The mean loss and the (N, K) class probabilities on a prepared split, from one pass over its
    images streamed in the pixel range of `contract`. The loss is the model's own compiled loss of
    its outputs and the labels in the form it takes, as `evaluate` computes it, without a second
    pass; the outputs and labels are held (N × K numbers), never the images."""
    outputs = model.predict(prediction_batches(split, contract.pixels), verbose=0)
    labels = split.labels()
    probabilities = class_probabilities(outputs, contract)
    loss = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
    targets = labels_for_loss(labels, contract, probabilities.shape[1])
    losses = keras.ops.convert_to_numpy(loss(targets, outputs))
    return float(np.mean(losses, dtype=np.float64)), probabilities
