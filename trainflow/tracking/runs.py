"""Opening a trainflow run's MLflow run, and ending it: the same MLflow run for every attempt of the
trainflow run, on any machine, found by its tag (so an attempt that died before recording the
MLflow run's id is found too)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from trainflow.tracking.connection import answering_client, client_for
from trainflow.tracking.identity import TrackedRun

logger = logging.getLogger("trainflow.tracking")

RUN_NAME_TAG = "trainflow.run_name"
FLOW_RUN_TAG = "trainflow.flow_run_id"
# A run that `--fresh` started over: its MLflow run stays, for the record, but is no longer found.
SUPERSEDED_TAG = "trainflow.superseded"
# Settings that are not the run's parameters: how an attempt was started, or a secret.
NOT_PARAMETERS = frozenset({"run_name", "fresh", "fail_at_epoch", "kill_at_step", "mlflow"})


def run_parameters(config: dict[str, Any], data_fingerprint: str) -> dict[str, str]:
    """The MLflow params of a run: its settings (as `trainflow run` options give them) and the
    fingerprint of its prepared data."""
    parameters = {
        name: str(value)
        for name, value in config.items()
        if name not in NOT_PARAMETERS and value is not None
    }
    return {**parameters, "data_fingerprint": data_fingerprint}


def open_tracked_run(
    uri: str,
    experiment: str,
    run_name: str,
    flow_run_id: str | None,
    fresh: bool,
    parameters: dict[str, str],
    tags: dict[str, str],
) -> TrackedRun:
    """The MLflow run of trainflow run `run_name` in `experiment`, created with `parameters` the
    first time and RUNNING again on every later attempt (one a dead process left RUNNING, or a
    failed one resumed); `fresh` supersedes the earlier one, unless the same flow run made it (a
    retry of the flow run resumes). `tags` (the flow run, the data source, the code version) are
    set on every attempt."""
    client = answering_client(uri)
    experiment_id = _experiment_id(client, experiment)
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
        order_by=["attributes.start_time DESC"],
    )
    runs = [run for run in runs if SUPERSEDED_TAG not in run.data.tags]
    if fresh:
        for run in [run for run in runs if run.data.tags.get(FLOW_RUN_TAG) != flow_run_id]:
            _supersede(client, run)
            runs.remove(run)
    if runs:
        run = runs[0]
        if run.info.status != "RUNNING":
            client.update_run(run.info.run_id, status="RUNNING")
        logger.info("Tracking in MLflow run %s (continued)", run.info.run_id)
    else:
        run = client.create_run(experiment_id, run_name=run_name, tags={RUN_NAME_TAG: run_name})
        logger.info("Tracking in MLflow run %s", run.info.run_id)
    from mlflow.entities import Param, RunTag

    # Params cannot change once logged; only those an attempt that died early did not log are.
    missing = {name: value for name, value in parameters.items() if name not in run.data.params}
    client.log_batch(
        run.info.run_id,
        params=[Param(name, value) for name, value in missing.items()],
        tags=[RunTag(name, value) for name, value in tags.items()],
    )
    return TrackedRun(uri=uri, experiment_id=experiment_id, run_id=run.info.run_id)


def end_tracked_run_by_id(uri: str, run_id: str, status: Literal["FINISHED", "FAILED"]) -> None:
    """Mark the MLflow run `run_id` FINISHED or FAILED."""
    client_for(uri).set_terminated(run_id, status)


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # another run created it meanwhile
        return client.get_experiment_by_name(name).experiment_id


def _supersede(client: Any, run: Any) -> None:
    client.set_tag(run.info.run_id, SUPERSEDED_TAG, "true")
    if run.info.status == "RUNNING":
        client.set_terminated(run.info.run_id, "FAILED")
    logger.info("MLflow run %s is superseded by a fresh start", run.info.run_id)
