"""Stage 3: save the trained model's weights as a `.weights.h5` file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from prefect import task

from trainflow.errors import NonFiniteLossError, RunStateError
from trainflow.orchestration.retry_policy import RETRY_TRANSIENT_FAULTS
from trainflow.paths import RunPaths
from trainflow.results import TrainingResult
from trainflow.runs.stage_records import run_stage_once
from trainflow.storage.digests import sha256_of_files
from trainflow.training.models import build_model

logger = logging.getLogger("trainflow.persist")
STAGE = "persist_weights"


def persist_weights(training: TrainingResult, paths: RunPaths) -> Path:
    """Write the best epoch's weights (lowest val_loss, as ModelCheckpoint kept them) to
    `paths.weights`, by loading them into a freshly built model and saving them atomically.
    Skipped when an earlier attempt already did it for this training result."""
    run_stage_once(
        paths, STAGE, [training.model_identity], [paths.weights], lambda: _save(training, paths)
    )
    return paths.weights


def _save(training: TrainingResult, paths: RunPaths) -> None:
    storage = paths.storage
    best = storage.path(training.best_checkpoint)  # local since the run was opened, or written here
    if sha256_of_files([best]) != training.best_checkpoint_sha256:
        raise RunStateError(
            f"{storage.location(best)} differs from the file training recorded; it was changed "
            "after training: start the run over with --fresh"
        )
    model = build_model(training.recipe, training.image_shape, training.num_classes)
    model.load_weights(best)
    if not all(np.isfinite(weights).all() for weights in model.get_weights()):
        raise NonFiniteLossError(
            f"{storage.location(best)} holds NaN or infinite weights; not persisting a diverged "
            "model: start the run over with --fresh"
        )
    with storage.writing(paths.weights) as temporary:
        model.save_weights(temporary)
    logger.info(
        "Saved weights of epoch %d to %s", training.best_epoch, storage.location(paths.weights)
    )


persist_weights_task = task(
    persist_weights, name="persist_weights", retries=1, **RETRY_TRANSIENT_FAULTS
)
