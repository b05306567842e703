"""Reaching the MLflow tracking server."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from trainflow.errors import UserInputError, error_reason

# A tracking server that does not answer must not hold a run up for minutes (MLflow's own default
# is 7 retries with exponential backoff): a request gives up after these, and what it carried is
# sent again later (each epoch at the next checkpoint, by the end of the run, or by the attempt
# that resumes it). A user's own settings of these variables win.
REQUEST_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    # MLflow 3 reports usage to its makers over the internet: not from a training job unasked.
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


class TrackingServerError(UserInputError):
    """The tracking server a run is to log to does not answer when the run starts."""


# What `mlflow.set_tracking_uri`, `set_registry_uri` and `set_experiment` also write into this
# process's environment (for MLflow's subprocesses).
_EXPORTED_BY_MLFLOW = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")


def client_for(uri: str):
    """An `MlflowClient` of the tracking server (and model registry) at `uri`; MLflow's own
    functions of this process use it too. This process's environment is left as it was."""
    for name, value in REQUEST_SETTINGS.items():
        os.environ.setdefault(name, value)
    import mlflow

    with environment_kept():
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def environment_kept() -> Iterator[None]:
    """MLflow's variables in this process's environment as they were before, whatever MLflow's
    setters inside exported: one run with --mlflow would otherwise make every later run of the
    same process (a worker serving flows, a test session) log to that server, or fail when it is
    gone."""
    exported = {name: os.environ.get(name) for name in _EXPORTED_BY_MLFLOW}
    try:
        yield
    finally:
        for name, value in exported.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def answering_client(uri: str):
    """`client_for(uri)`, once the server has answered a request; `TrackingServerError` naming it
    when it does not."""
    client = client_for(uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as error:
        raise TrackingServerError(
            f"the MLflow tracking server {uri} does not answer ({_cause(error)}): start it "
            "(trainflow stack up --mlflow, or mlflow server), or unset MLFLOW_TRACKING_URI and "
            "--mlflow to train without tracking"
        ) from error
    return client


def _cause(error: BaseException) -> str:
    """The root of a failed request, such as `[Errno 111] Connection refused`: MLflow's message
    nests it in three layers of urllib3's."""
    text = str(error)
    found = re.search(r"\[Errno -?\d+\] [^\"')]+", text)
    return found.group(0) if found else error_reason(error)[:200]
