"""Opening and closing a run: its directory, its record, and the summary the flow returns."""

from __future__ import annotations

from prefect import task
from prefect.runtime import flow_run
from prefect.utilities.urls import url_for

from trainflow.config import RunConfig
from trainflow.orchestration.summary import publish_summary
from trainflow.paths import RunPaths
from trainflow.results import Evaluation, PersistedModel, RunReport, RunSummary, TrainingResult
from trainflow.runs.records import close_run, default_run_name, open_run


def finish_run(
    paths: RunPaths,
    training: TrainingResult,
    persisted: PersistedModel,
    evaluation: Evaluation,
    report: RunReport,
    flow_run_url: str | None = None,
) -> RunSummary:
    """Mark the run completed and summarise it (with its flow run's UI page, when there is one)."""
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
        test_accuracy=evaluation.accuracy,
        test_loss=evaluation.loss,
        macro_f1=evaluation.report.macro_f1,
        epochs_completed=training.epochs_completed,
        best_epoch=training.best_epoch,
        stopped_early=training.stopped_early,
        resumed_from=training.resumed_from,
        resumed_from_step=training.resumed_from_step,
        flow_run_url=flow_run_url,
    )
    close_run(
        paths,
        epochs_completed=summary.epochs_completed,
        resumed_from=summary.resumed_from,
        test_accuracy=summary.test_accuracy,
        pixels=summary.pixels,
        data_input=summary.data_input,
    )
    return summary


def _flow_run_page() -> str | None:
    """This flow run's page in the Prefect UI, as Prefect links it; None when Prefect knows no UI
    (a run on a server of its own, which stops with it: `app/flow_runs.py`)."""
    return url_for("flow-run", obj_id=flow_run.id) or None


@task(name="start_run")
def start_run_task(config: RunConfig) -> RunPaths:
    """Open the run named in `config`, or a new one named after the Prefect flow run."""
    run_name = config.run_name or default_run_name(flow_run.name, flow_run.id)
    return open_run(config, run_name, flow_run_id=flow_run.id, flow_run_url=_flow_run_page())


@task(name="finish_run")
def finish_run_task(
    config: RunConfig,
    paths: RunPaths,
    training: TrainingResult,
    persisted: PersistedModel,
    evaluation: Evaluation,
    report: RunReport,
) -> RunSummary:
    """Close the run and publish its summary artifact."""
    summary = finish_run(paths, training, persisted, evaluation, report, _flow_run_page())
    publish_summary(config, summary)
    return summary
