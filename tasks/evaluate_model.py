"""Stage 5: load the saved model from disk in two ways, evaluate both on the test split, compare."""

from __future__ import annotations

import logging
import math

import numpy as np
from prefect import task

from trainflow.data.prepared import PreparedSplit
from trainflow.orchestration.retry_policy import RETRY_TRANSIENT_FAULTS
from trainflow.paths import RunPaths
from trainflow.reports.metrics import (
    classification_report,
    predictions_table,
    report_tables,
)
from trainflow.results import Evaluation, PersistedModel, PreparedData, TrainingResult
from trainflow.runs.stage_records import run_stage_once
from trainflow.training.models import build_model, load_saved_model
from trainflow.training.scoring import losses_and_probabilities

logger = logging.getLogger("trainflow.evaluate")
STAGE = "evaluate_model"
LOSS_TOLERANCE = 1e-5


class ModelsDisagree(RuntimeError):
    """The `.keras` file and the `.weights.h5` file do not hold the same model."""


def evaluate_model(
    persisted: PersistedModel, training: TrainingResult, data: PreparedData, paths: RunPaths
) -> Evaluation:
    """Evaluate `load_model(.keras)` and a freshly built model with `load_weights(.weights.h5)` on
    the test split; require that they agree; write `paths.evaluation`. Skipped when an earlier
    attempt already did it for this training result and these files."""
    run_stage_once(
        paths,
        STAGE,
        [persisted.model_dump(mode="json"), training.model_identity, data.fingerprint],
        [paths.evaluation, paths.predictions_table],
        lambda: _evaluate(persisted, training, data, paths),
    )
    evaluation = Evaluation.model_validate_json(paths.evaluation.read_text())
    # Perhaps written by another machine: its paths there are this process's files here.
    return evaluation.model_copy(
        update={
            "path": paths.evaluation,
            "predictions": paths.predictions_table,
            "keras_model": persisted.keras_model,
            "weights": persisted.weights,
        }
    )


def _evaluate(
    persisted: PersistedModel, training: TrainingResult, data: PreparedData, paths: RunPaths
) -> None:
    contract = training.contract
    test = PreparedSplit.of(data.paths, "test")
    labels = test.labels()
    loaded = load_saved_model(persisted.keras_model, training.recipe)
    rebuilt = build_model(training.recipe, training.image_shape, training.num_classes)
    rebuilt.load_weights(persisted.weights)
    (loaded_loss, probabilities), (rebuilt_loss, rebuilt_probabilities) = losses_and_probabilities(
        [loaded, rebuilt], test, contract, labels
    )
    loaded_predictions = probabilities.argmax(axis=1)
    rebuilt_predictions = rebuilt_probabilities.argmax(axis=1)
    if not np.array_equal(loaded_predictions, rebuilt_predictions) or not math.isclose(
        loaded_loss, rebuilt_loss, rel_tol=LOSS_TOLERANCE
    ):
        raise ModelsDisagree(
            f"{persisted.keras_model} and {persisted.weights} give different results on the test "
            f"set (loss {loaded_loss} vs {rebuilt_loss}); persist the model again"
        )
    report = classification_report(labels, loaded_predictions, training.class_names)
    per_class, confusion = report_tables(report)
    paths.storage.write_table(paths.per_class_table, per_class)
    paths.storage.write_table(paths.confusion_table, confusion)
    paths.storage.write_table(paths.predictions_table, predictions_table(labels, probabilities))
    evaluation = Evaluation(
        loss=loaded_loss,
        accuracy=float((loaded_predictions == labels).mean()),
        per_class_accuracy=[item.recall for item in report.per_class],
        num_examples=len(labels),
        report=report,
        predictions=paths.predictions_table,
        keras_model=persisted.keras_model,
        weights=persisted.weights,
        weights_model_loss=rebuilt_loss,
        path=paths.evaluation,
    )
    paths.storage.write_json(paths.evaluation, evaluation.model_dump(mode="json"))
    logger.info(
        "Test accuracy %.4f, loss %.4f on %d examples (%s)",
        evaluation.accuracy,
        evaluation.loss,
        evaluation.num_examples,
        paths.storage.location(paths.evaluation),
    )


evaluate_model_task = task(
    evaluate_model, name="evaluate_model", retries=1, **RETRY_TRANSIENT_FAULTS
)
