"""The training flow: prepare data -> train -> persist weights -> persist model -> evaluate ->
report."""

from __future__ import annotations

from prefect import flow
from prefect.client.schemas.objects import FlowRun
from prefect.flows import Flow
from prefect.states import State

from tasks.evaluate_model import evaluate_model_task
from tasks.persist_model import persist_model_task
from tasks.persist_weights import persist_weights_task
from tasks.prepare_data import prepare_data_task
from tasks.record_run import finish_run_task, start_run_task
from tasks.report_run import report_run_task
from tasks.track_run import finish_tracking_task, log_model_task, open_tracking_task
from tasks.train_model import train_model_task
from trainflow.config import RunConfig
from trainflow.paths import ArtifactPaths
from trainflow.results import RunSummary
from trainflow.runs.records import RunRecord, default_run_name, fail_run


def _record_failure(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """Flow hook: mark the run failed in its record, so `trainflow runs` shows it, and its MLflow
    run FAILED."""
    config = RunConfig.model_validate(flow_run.parameters.get("config", {}))
    run_name = config.run_name or default_run_name(flow_run.name, str(flow_run.id))
    fail_run(
        ArtifactPaths.at(config.artifacts).run(run_name),
        state.message or "failed",
        also=lambda record: _fail_tracked_run(config, record),
    )


def _fail_tracked_run(config: RunConfig, record: RunRecord) -> None:
    if record.mlflow_run_id is not None and config.tracking_uri is not None:
        from trainflow.tracking.runs import end_tracked_run_by_id

        end_tracked_run_by_id(config.tracking_uri, record.mlflow_run_id, "FAILED")


@flow(name="trainflow", on_failure=[_record_failure], log_prints=False)
def training_flow(config: RunConfig = RunConfig()) -> RunSummary:
    """Train, persist and evaluate one model; a rerun with the same run name resumes it."""
    paths = start_run_task(config)
    data = prepare_data_task(config.source, config.preparation, ArtifactPaths.at(config.artifacts))
    tracked = open_tracking_task(config, paths, data) if config.tracking_uri else None
    training = train_model_task(config, data, paths, tracked)
    weights = persist_weights_task(training, paths)
    persisted = persist_model_task(training, weights, paths)
    # The model goes to MLflow while the run is evaluated and reported (a thread of Prefect's).
    logged = log_model_task.submit(tracked, paths, training, persisted) if tracked else None
    evaluation = evaluate_model_task(persisted, training, data, paths)
    report = report_run_task(training, evaluation, data, paths)
    if tracked is not None:  # before the run closes: only the run's owner writes to its MLflow run
        finish_tracking_task(tracked, paths, training, evaluation, report, wait_for=[logged])
    return finish_run_task(config, paths, training, persisted, evaluation, report, tracked)
