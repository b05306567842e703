"""Scoring a model on prepared data: class probabilities and the loss, in one prediction pass."""

from __future__ import annotations

from collections.abc import Sequence
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
    labels = split.labels()
    [(_, probabilities)] = losses_and_probabilities([model], split, contract, labels)
    return float((probabilities.argmax(axis=1) == labels).mean())


def saved_contract(metadata: Path) -> ModelContract:
    """The contract a saved model's metadata file records; the default one (softmax
    probabilities, pixels in [0, 1]) for a model saved before trainflow recorded it."""
    if not metadata.is_file():
        return ModelContract()
    return ModelMetadata.model_validate_json(metadata.read_text()).contract


def losses_and_probabilities(
    models: Sequence[keras.Model], split: PreparedSplit, contract: ModelContract, labels: np.ndarray
) -> list[tuple[float, np.ndarray]]:
    """Each model's mean loss and (N, K) class probabilities on a prepared split whose labels are
    `labels`, from one pass over its images streamed in the pixel range of `contract` (each batch
    read once, fed to every model). The loss is the model's own compiled loss of its outputs and
    the labels in the form it takes, as `evaluate` computes it, without a second pass; the outputs
    are held (N × K numbers), never the images."""
    batches: list[list[np.ndarray]] = [[] for _ in models]
    for images in prediction_batches(split, contract.pixels):
        for model, outputs in zip(models, batches):
            outputs.append(keras.ops.convert_to_numpy(model.predict_on_batch(images)))
    scores = []
    for model, outputs in zip(models, batches):
        outputs = np.concatenate(outputs)
        probabilities = class_probabilities(outputs, contract)
        loss = keras.losses.get(model.loss) if isinstance(model.loss, str) else model.loss
        targets = labels_for_loss(labels, contract, probabilities.shape[1])
        losses = keras.ops.convert_to_numpy(loss(targets, outputs))
        scores.append((float(np.mean(losses, dtype=np.float64)), probabilities))
    return scores
