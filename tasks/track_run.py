"""Tracking in MLflow, when the run has a tracking URI: opening the run's MLflow run before
training (its epochs are then sent by training, `tasks/train_model.py`), and sending the finished
run's results.

MLflow is imported inside the functions: a run without a tracking URI never imports it.
"""

from __future__ import annotations

from prefect import task
from prefect.runtime import flow_run

from trainflow.config import RunConfig
from trainflow.errors import RunStateError
from trainflow.orchestration.links import flow_run_page
from trainflow.orchestration.retry_policy import RETRY_TRANSIENT_FAULTS
from trainflow.paths import ArtifactPaths, RunPaths
from trainflow.results import (
    Evaluation,
    PersistedModel,
    PreparedData,
    PromotionDecision,
    RunReport,
    TrainingResult,
)
from trainflow.runs.records import read_record, record_tracking
from trainflow.runs.registry import code_version
from trainflow.tracking.identity import TrackedRun


def open_tracking(
    config: RunConfig,
    paths: RunPaths,
    data: PreparedData,
    flow_run_id: str | None = None,
    flow_run_url: str | None = None,
) -> TrackedRun:
    """The MLflow run of this trainflow run (created, or continued), with its params, tags, and
    its id in the run record."""
    from trainflow.tracking.runs import open_tracked_run, run_parameters

    tags = {
        "trainflow.data_source": config.dataset,
        "trainflow.code_version": code_version(),
        "trainflow.artifacts": paths.location,
    }
    if flow_run_id:
        tags["trainflow.flow_run_id"] = flow_run_id
    if flow_run_url:
        tags["trainflow.flow_run_url"] = flow_run_url
    tracked = open_tracked_run(
        config.tracking_uri or "",
        config.experiment,
        paths.name,
        flow_run_id,
        config.fresh,
        run_parameters(config.model_dump(mode="json"), data.fingerprint),
        tags,
    )
    record_tracking(paths, tracked.run_id, tracked.url)
    return tracked


def log_model(
    tracked: TrackedRun, paths: RunPaths, training: TrainingResult, persisted: PersistedModel
) -> None:
    """Log the run's saved `.keras` model in its MLflow run (MLflow's Keras format)."""
    from trainflow.tracking.results import log_tracked_model, trained_epochs

    log_tracked_model(
        tracked,
        trained_epochs(training.history),
        paths.storage.local_copy(persisted.keras_model),
        training.contract,
        training.image_shape,
        len(training.class_names),
    )


def finish_tracking(
    tracked: TrackedRun,
    paths: RunPaths,
    training: TrainingResult,
    evaluation: Evaluation,
    report: RunReport,
) -> None:
    """Send the finished run's results to its MLflow run, and mark it FINISHED (its model is
    logged before, by `log_model`)."""
    from trainflow.tracking.results import finish_tracked_run

    storage = paths.storage
    pictures = [report.learning_curves, report.confusion_matrix, report.confident_mistakes]
    tables = [
        report.history_table,
        report.per_class_table,
        report.confusion_table,
        report.predictions_table,
    ]
    finish_tracked_run(
        tracked,
        training.history,
        training.epoch_ends_ms,
        {
            "test_accuracy": evaluation.accuracy,
            "test_loss": evaluation.loss,
            "test_macro_f1": evaluation.report.macro_f1,
        },
        evaluation.report,
        {
            "reports": [storage.local_copy(path) for path in [*pictures, *tables]],
            "evaluation": [storage.local_copy(evaluation.path)],
        },
    )


def mirror_promotion(config: RunConfig, run_name: str, promoted: bool) -> None:
    """Register the challenger `run_name` as a version of the MLflow registered model, and move
    the alias `champion` to it when it was promoted (trainflow's registry decided already)."""
    from trainflow.tracking.registry import point_champion_at, register_run_model

    record = read_record(ArtifactPaths.at(config.artifacts).run(run_name))
    if record is None or record.mlflow_run_id is None:
        raise RunStateError(f"run {run_name} has no MLflow run to register")
    uri = config.tracking_uri or ""
    register_run_model(uri, config.registered_model_name, record.mlflow_run_id, run_name)
    if promoted:
        point_champion_at(uri, config.registered_model_name, run_name)


@task(name="open_tracking", retries=2, **RETRY_TRANSIENT_FAULTS)
def open_tracking_task(config: RunConfig, paths: RunPaths, data: PreparedData) -> TrackedRun:
    """Open (or continue) the run's MLflow run."""
    return open_tracking(config, paths, data, flow_run.id, flow_run_page())


@task(name="log_model", retries=3, retry_delay_seconds=10)
def log_model_task(
    tracked: TrackedRun, paths: RunPaths, training: TrainingResult, persisted: PersistedModel
) -> None:
    """Log the model in the MLflow run (retried: the tracking server may be back soon)."""
    log_model(tracked, paths, training, persisted)


@task(name="finish_tracking", retries=3, retry_delay_seconds=10)
def finish_tracking_task(
    tracked: TrackedRun,
    paths: RunPaths,
    training: TrainingResult,
    evaluation: Evaluation,
    report: RunReport,
) -> None:
    """Send the results to the MLflow run (retried: the tracking server may be back soon)."""
    finish_tracking(tracked, paths, training, evaluation, report)


@task(name="mirror_promotion", retries=3, retry_delay_seconds=10)
def mirror_promotion_task(config: RunConfig, decision: PromotionDecision) -> None:
    """The challenger and the decision in MLflow's model registry."""
    mirror_promotion(config, decision.run_name, decision.promoted)
