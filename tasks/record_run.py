"""Opening and closing a run: its directory, its record, and the summary the flow returns."""

from __future__ import annotations

from prefect import task
from prefect.runtime import flow_run

from trainflow.config import RunConfig
from trainflow.orchestration.links import flow_run_page
from trainflow.orchestration.summary import publish_summary
from trainflow.paths import RunPaths
from trainflow.results import Evaluation, PersistedModel, RunReport, RunSummary, TrainingResult
from trainflow.runs.records import close_run, default_run_name, open_run
from trainflow.tracking.identity import TrackedRun


def finish_run(
    paths: RunPaths,
    training: TrainingResult,
    persisted: PersistedModel,
    evaluation: Evaluation,
    report: RunReport,
    flow_run_url: str | None = None,
    mlflow_run_url: str | None = None,
) -> RunSummary:
    """Mark the run completed and summarise it (with its flow run's page in the Prefect UI, and
    its run's in MLflow's, when there are)."""
    summary = RunSummary(
        run_name=paths.name,
        run_dir=paths.location,
        model_path=paths.storage.location(persisted.keras_model),
        weights_path=paths.storage.location(persisted.weights),
        saved_model_path=paths.storage.location(persisted.saved_model),
        evaluation_path=paths.storage.location(evaluation.path),
        reports_dir=paths.storage.location(report.learning_curves.parent),
        data_fingerprint=training.data_fingerprint,
        model=training.recipe.model,
        class_names=training.class_names,
        pixels=training.contract.pixels,
        data_input=training.data_order.input,
        distribution=training.distribution,
        test_accuracy=evaluation.accuracy,
        test_loss=evaluation.loss,
        macro_f1=evaluation.report.macro_f1,
        epochs_completed=training.epochs_completed,
        best_epoch=training.best_epoch,
        stopped_early=training.stopped_early,
        resumed_from=training.resumed_from,
        resumed_from_step=training.resumed_from_step,
        flow_run_url=flow_run_url,
        mlflow_run_url=mlflow_run_url,
    )
    close_run(
        paths,
        epochs_completed=summary.epochs_completed,
        resumed_from=summary.resumed_from,
        test_accuracy=summary.test_accuracy,
        pixels=summary.pixels,
        data_input=summary.data_input,
        distribution=summary.distribution,
    )
    return summary


@task(name="start_run")
def start_run_task(config: RunConfig) -> RunPaths:
    """Open the run named in `config`, or a new one named after the Prefect flow run."""
    run_name = config.run_name or default_run_name(flow_run.name, flow_run.id)
    return open_run(config, run_name, flow_run_id=flow_run.id, flow_run_url=flow_run_page())


@task(name="finish_run")
def finish_run_task(
    config: RunConfig,
    paths: RunPaths,
    training: TrainingResult,
    persisted: PersistedModel,
    evaluation: Evaluation,
    report: RunReport,
    tracked: TrackedRun | None = None,
) -> RunSummary:
    """Close the run and publish its summary artifact."""
    mlflow_run_url = None if tracked is None else tracked.url
    summary = finish_run(
        paths, training, persisted, evaluation, report, flow_run_page(), mlflow_run_url
    )
    publish_summary(config, summary)
    return summary
