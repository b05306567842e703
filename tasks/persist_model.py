"""Stage 4: save the whole model as a `.keras` file and export it as a TF SavedModel."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from prefect import task

from trainflow.orchestration.retry_policy import RETRY_TRANSIENT_FAULTS
from trainflow.paths import RunPaths
from trainflow.results import ModelMetadata, PersistedModel, TrainingResult
from trainflow.runs.stage_records import run_stage_once
from trainflow.training.export import export_for_serving
from trainflow.training.models import build_model

logger = logging.getLogger("trainflow.persist")
STAGE = "persist_model"
METADATA_FILE = "trainflow.json"


def persist_model(training: TrainingResult, weights: Path, paths: RunPaths) -> PersistedModel:
    """Rebuild the model, load `weights`, and save it to `paths.keras_model` (architecture, weights
    and optimizer), `paths.saved_model` (inference-only SavedModel serving class probabilities)
    and `paths.model_metadata` (the pixels to feed it, its outputs, its classes), each atomically.
    Skipped when an earlier attempt already did it for this training result."""
    persisted = PersistedModel(
        keras_model=paths.keras_model,
        saved_model=paths.saved_model,
        weights=weights,
        metadata=paths.model_metadata,
    )
    run_stage_once(
        paths,
        STAGE,
        [training.model_identity],
        [paths.keras_model, paths.saved_model, paths.model_metadata],
        lambda: _save(training, weights, paths),
    )
    return persisted


def _save(training: TrainingResult, weights: Path, paths: RunPaths) -> None:
    model = build_model(training.recipe, training.image_shape, training.num_classes)
    model.load_weights(weights)
    with paths.storage.writing(paths.keras_model) as temporary:
        model.save(temporary)
    metadata = ModelMetadata(
        model=training.recipe.model,
        image_shape=training.image_shape,
        class_names=training.class_names,
        contract=training.contract,
    ).model_dump(mode="json")
    with paths.storage.writing(paths.saved_model) as temporary:
        export_for_serving(model, training.image_shape, training.contract, temporary)
        # Beside the SavedModel's own files, where TensorFlow leaves what it does not read.
        (temporary / "assets.extra").mkdir(exist_ok=True)
        (temporary / "assets.extra" / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    paths.storage.write_json(paths.model_metadata, metadata)
    logger.info(
        "Saved model to %s and SavedModel to %s",
        paths.storage.location(paths.keras_model),
        paths.storage.location(paths.saved_model),
    )


persist_model_task = task(persist_model, name="persist_model", retries=1, **RETRY_TRANSIENT_FAULTS)
