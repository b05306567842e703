"""The model registry mirrored in MLflow's: each registered trainflow run a version of the
registered model, and its alias `champion` on the version of trainflow's champion.

trainflow's own registry (`trainflow/runs/registry.py`, beside the artifacts, locked, in the
store when the artifacts are) stays the source of truth: it decides, and MLflow is told after.
Both operations are idempotent, so a retried or repeated mirror changes nothing more.
"""

from __future__ import annotations

import logging
from typing import Any

from trainflow.tracking.connection import client_for
from trainflow.tracking.results import MODEL_NAME
from trainflow.tracking.runs import RUN_NAME_TAG

logger = logging.getLogger("trainflow.tracking")

CHAMPION_ALIAS = "champion"


def register_run_model(uri: str, registered_model: str, run_id: str, run_name: str) -> str:
    """The version of `registered_model` that holds the model MLflow run `run_id` logged
    (registered now unless it is already); its number."""
    client = client_for(uri)
    existing = client.search_model_versions(f"name = '{registered_model}' and run_id = '{run_id}'")
    if existing:
        return existing[0].version
    import mlflow
    from mlflow.exceptions import MlflowException

    experiment_id = client.get_run(run_id).info.experiment_id
    logged = [
        model
        for model in mlflow.search_logged_models(
            experiment_ids=[experiment_id],
            filter_string=f"source_run_id = '{run_id}'",
            order_by=[{"field_name": "creation_timestamp", "ascending": False}],
            output_format="list",
        )
        if model.name == MODEL_NAME and str(model.status) == "READY"
    ]
    if not logged:
        raise RuntimeError(f"MLflow run {run_id} has no logged model to register")
    try:
        client.create_registered_model(registered_model)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        registered_model,
        source=logged[0].model_uri,
        run_id=run_id,
        tags={RUN_NAME_TAG: run_name},
        model_id=logged[0].model_id,
    )
    logger.info("Registered %s as version %s of %s", run_name, version.version, registered_model)
    return version.version


def point_champion_at(uri: str, registered_model: str, run_name: str) -> str | None:
    """Move the alias `champion` of `registered_model` to the version of trainflow run
    `run_name`; its number, or None when no version of that run is registered in MLflow (a run
    trained without tracking)."""
    client = client_for(uri)
    versions = _versions_of(client, registered_model, run_name)
    if not versions:
        logger.warning(
            "%s has no version of run %s in MLflow: its alias %s is left as it is",
            registered_model,
            run_name,
            CHAMPION_ALIAS,
        )
        return None
    version = max(versions, key=lambda item: int(item.version)).version
    client.set_registered_model_alias(registered_model, CHAMPION_ALIAS, version)
    logger.info("%s@%s is version %s (%s)", registered_model, CHAMPION_ALIAS, version, run_name)
    return version


def _versions_of(client: Any, registered_model: str, run_name: str) -> list:
    return [
        version
        for version in client.search_model_versions(f"name = '{registered_model}'")
        if version.tags.get(RUN_NAME_TAG) == run_name
    ]
