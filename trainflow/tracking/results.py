"""A finished run's results in its MLflow run: the model in MLflow's Keras format (logged while
the run is evaluated), then the epochs not sent yet, the test metrics, the per-class table and the
reports; then FINISHED. Every part is sent only if the MLflow run lacks it, so a retried or
resumed end adds nothing twice."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainflow.contract import ModelContract
from trainflow.reports.metrics import ClassificationReport
from trainflow.tracking.connection import client_for, environment_kept
from trainflow.tracking.epochs import EpochLog
from trainflow.tracking.identity import TrackedRun

logger = logging.getLogger("trainflow.tracking")

MODEL_NAME = "model"  # the logged model's name in the run
EPOCHS_TAG = "trainflow.epochs"  # on a logged model: the epochs its weights were trained for


def finish_tracked_run(
    tracked: TrackedRun,
    history: dict[str, list[float]],
    epoch_ends_ms: list[int],
    test_metrics: dict[str, float],
    report: ClassificationReport,
    files: dict[str, list[Path]],
) -> None:
    """Send what the MLflow run lacks of a finished run and mark it FINISHED: `test_metrics`
    (step: the last epoch), `report` as the table `evaluation/per_class.json`, and `files` under
    their artifact directories (local copies). The model is logged before
    (`log_tracked_model`)."""
    client = client_for(tracked.uri)
    EpochLog(client, tracked.run_id).send(history, epoch_ends_ms)
    # At the step of the last epoch (a run trained on for more epochs later gets another point),
    # timestamped with its end: sending them again adds nothing.
    epochs = trained_epochs(history)
    ended = epoch_ends_ms[-1] if epoch_ends_ms else 0
    EpochLog(client, tracked.run_id).send_at(epochs, ended, test_metrics)
    client.log_table(
        tracked.run_id,
        data={
            key: [getattr(item, key) for item in report.per_class]
            for key in type(report.per_class[0]).model_fields
        },
        artifact_file="evaluation/per_class.json",
    )
    for directory, paths in files.items():
        for path in paths:
            client.log_artifact(tracked.run_id, str(path), directory)
    client.set_terminated(tracked.run_id, "FINISHED")


def trained_epochs(history: dict[str, list[float]]) -> int:
    """The number of epochs `history` (Keras's, by metric) holds."""
    return max((len(values) for values in history.values()), default=0)


def log_tracked_model(
    tracked: TrackedRun,
    epochs: int,
    keras_model: Path,
    contract: ModelContract,
    image_shape: tuple[int, ...],
    num_classes: int,
) -> None:
    """Log the `.keras` model at `keras_model`, trained for `epochs` epochs, in MLflow's Keras
    format, unless the MLflow run has it already."""
    client_for(tracked.uri)  # MLflow's own functions of this process use that server
    if not _model_logged(tracked, epochs):
        model = _SavedKerasFile(keras_model)
        _log_keras_model(tracked, model, contract, image_shape, num_classes, epochs)


def _model_logged(tracked: TrackedRun, epochs: int) -> bool:
    """Whether the run has its model after `epochs` epochs (an attempt that died while logging
    it leaves one that is not READY)."""
    import mlflow

    logged = mlflow.search_logged_models(
        experiment_ids=[tracked.experiment_id],
        filter_string=f"source_run_id = '{tracked.run_id}'",
        output_format="list",
    )
    return any(
        model.name == MODEL_NAME
        and str(model.status) == "READY"
        and model.tags.get(EPOCHS_TAG) == str(epochs)
        for model in logged
    )


class _SavedKerasFile:
    """The run's saved `.keras` file, standing for the model in `mlflow.keras.save_model`, which
    (given a signature and the requirements) only calls `model.save(path)`: the file is copied, so
    the model in MLflow is the very file the run saved and checked, and logging it neither loads
    the model into TensorFlow nor serializes it again (a test loads and serves what is logged)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, destination: str) -> None:
        shutil.copyfile(self.path, destination)


def _log_keras_model(
    tracked: TrackedRun,
    model: _SavedKerasFile,
    contract: ModelContract,
    image_shape: tuple[int, ...],
    num_classes: int,
    epochs: int,
) -> Any:
    import keras
    import mlflow.keras
    import numpy as np
    import tensorflow as tf
    from mlflow.models import Model, ModelSignature
    from mlflow.types import Schema, TensorSpec

    outputs = 1 if contract.binary else num_classes
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, *image_shape))]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, outputs))]),
    )
    with environment_kept():
        mlflow.set_experiment(experiment_id=tracked.experiment_id)  # where Model.log puts it
    # Given, not inferred: inference imports the model in a subprocess and asks the network.
    requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"]
    with _requirements_taken_as_given():
        return Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.keras,
            run_id=tracked.run_id,
            model=model,
            signature=signature,
            pip_requirements=requirements,
            step=epochs,
            tags={EPOCHS_TAG: str(epochs)},
            metadata={
                # What a consumer feeds it and reads from it: pixels in [0, 1] ("unit") or as the
                # source stores them ("raw"); class probabilities or logits.
                "pixels": contract.pixels,
                "outputs": contract.outputs,
                "labels": contract.labels,
            },
        )


@contextmanager
def _requirements_taken_as_given() -> Iterator[None]:
    """Skip MLflow's check of a logged model's requirements against the installed packages,
    while the block runs: it maps every installed distribution's files to modules first (0.9 s
    of a 20-second run, profiled), and the requirements given are the installed versions."""
    from mlflow.utils import environment

    check = environment.warn_dependency_requirement_mismatches  # fails loudly if renamed
    environment.warn_dependency_requirement_mismatches = lambda requirements: None
    try:
        yield
    finally:
        environment.warn_dependency_requirement_mismatches = check
