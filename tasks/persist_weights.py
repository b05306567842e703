"""Stage 3: save the trained model's weights as a `.weights.h5` file."""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import task

from tasks.train_model import TrainingResult
from trainflow.atomic import atomic_path
from trainflow.models import build_model
from trainflow.paths import RunPaths

logger = logging.getLogger("trainflow.persist")


def persist_weights(training: TrainingResult, paths: RunPaths) -> Path:
    """Write the best epoch's weights (lowest val_loss, as ModelCheckpoint kept them) to
    `paths.weights`, by loading them into a freshly built model and saving them atomically."""
    model = build_model(training.model_kind, training.image_shape, training.num_classes)
    model.load_weights(training.best_checkpoint)
    with atomic_path(paths.weights) as temporary:
        model.save_weights(temporary)
    logger.info("Saved weights of epoch %d to %s", training.best_epoch, paths.weights)
    return paths.weights


persist_weights_task = task(persist_weights, name="persist_weights", retries=1)
