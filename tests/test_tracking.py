"""Runs tracked in MLflow, against a real `mlflow server` on 127.0.0.1: one MLflow run per trainflow
run across kills and resumes, each epoch once, the results and a model MLflow serves, and the
run's end state (FINISHED, FAILED, or set right by the next attempt)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TRAINFLOW, synthetic_images, write_idx_pair
from tests.link_proxy import LinkProxy
from tests.mlflow_runs import EPOCH_METRICS, history_of, runs_named
from tests.model_server import ModelServer
from trainflow.checkpoints.state import ResumeState

CLI_TIMEOUT = 600


def trainflow(*arguments: object, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TRAINFLOW, *map(str, arguments)],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


@pytest.fixture
def tracked_environment(server_environment, mlflow_server) -> dict[str, str]:
    """`trainflow` against the session's Prefect server, tracking to the session's MLflow server
    through MLFLOW_TRACKING_URI, as a user who exported it."""
    return {**server_environment, "MLFLOW_TRACKING_URI": mlflow_server.url}


@pytest.fixture
def client(mlflow_server):
    from trainflow.tracking.connection import client_for

    return client_for(mlflow_server.url)


def test_a_killed_and_resumed_run_is_one_mlflow_run_with_each_epoch_once(
    tmp_path, artifacts, tracked_environment, client, mlflow_server
):
    """SIGKILLed in its third epoch, right after a step checkpoint, without waiting for writes
    in flight; started again with the same name: one MLflow run, FINISHED, each epoch once with
    the values of the run's own history, its params, reports and a model whose pyfunc predicts
    the classes the run's `.keras` model predicts."""
    source = tmp_path / "idx"
    write_idx_pair(source, "t10k", *synthetic_images(1000, seed=3))
    run = [
        "run",
        "--dataset",
        f"idx:{source}",
        "--epochs",
        "4",
        "--patience",
        "4",
        "--checkpoint-every",
        "10",
        "--run-name",
        "tracked",
        "--experiment",
        "crashes",
        "--artifacts",
        artifacts,
        "--json",
    ]
    # 700 training rows in batches of 32: 22 steps an epoch; step 50 is in the third.
    killed = trainflow(
        *run,
        "--kill-at-step",
        "50",
        env={**tracked_environment, "TRAINFLOW_KILL_WITHOUT_FLUSH": "1"},
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    (left,) = runs_named(client, "crashes", "tracked")
    assert (
        left.info.status == "RUNNING"
    )  # what a dead process leaves: the next attempt sets it right

    resumed = trainflow(*run, env=tracked_environment)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    assert summary["resumed_from_step"] is not None

    (tracked,) = runs_named(client, "crashes", "tracked")
    assert tracked.info.run_id == left.info.run_id
    assert tracked.info.status == "FINISHED"
    assert summary["mlflow_run_url"].endswith(f"/runs/{tracked.info.run_id}")
    record = json.loads((artifacts / "runs" / "tracked" / "run.json").read_text())
    assert record["mlflow_run_id"] == tracked.info.run_id
    training = json.loads((artifacts / "runs" / "tracked" / "training.json").read_text())
    for key in EPOCH_METRICS:
        expected = list(enumerate(training["history"][key], start=1))
        assert history_of(client, tracked.info.run_id, key) == expected, key
    assert history_of(client, tracked.info.run_id, "test_accuracy") == [
        (4, summary["test_accuracy"])
    ]
    params = tracked.data.params
    assert params["data_fingerprint"] == summary["data_fingerprint"]
    assert params["epochs"] == "4" and params["checkpoint_every"] == "10"
    assert "kill_at_step" not in params and "run_name" not in params
    tags = tracked.data.tags
    assert tags["trainflow.flow_run_id"] and tags["trainflow.data_source"] == f"idx:{source}"

    from mlflow.artifacts import download_artifacts

    reports = {item.path for item in client.list_artifacts(tracked.info.run_id, "reports")}
    assert {"reports/learning_curves.png", "reports/confusion_matrix.png"} <= reports
    evaluation = json.loads(
        Path(
            download_artifacts(
                run_id=tracked.info.run_id,
                artifact_path="evaluation/evaluation.json",
                dst_path=str(tmp_path / "downloaded"),
                tracking_uri=mlflow_server.url,
            )
        ).read_text()
    )
    assert evaluation["accuracy"] == summary["test_accuracy"]
    _check_the_logged_model_predicts_as_the_run(tracked, artifacts, summary, mlflow_server.url)


def _check_the_logged_model_predicts_as_the_run(
    tracked, artifacts: Path, summary: dict, tracking_uri: str
) -> None:
    import mlflow
    import pyarrow.parquet as pq

    from trainflow.data.prepared import read_split
    from trainflow.paths import ArtifactPaths

    (logged,) = mlflow.search_logged_models(
        experiment_ids=[tracked.info.experiment_id],
        filter_string=f"source_run_id = '{tracked.info.run_id}'",
        output_format="list",
    )
    assert str(logged.status) == "READY" and logged.tags["trainflow.epochs"] == "4"
    model = mlflow.pyfunc.load_model(logged.model_uri)
    assert model.metadata.metadata["pixels"] == summary["pixels"]
    split = ArtifactPaths.at(artifacts).data(summary["data_fingerprint"]).split("test")
    images, _ = read_split(split, summary["pixels"])
    shape = model.metadata.get_input_schema().inputs[0].shape
    images = images.reshape(-1, *shape[1:])
    predicted = np.argmax(model.predict(images), axis=1)
    run_predictions = pq.read_table(Path(summary["reports_dir"]) / "predictions.parquet")
    classes = run_predictions.column("predicted").to_pylist()
    assert predicted.tolist() == classes
    # And served over HTTP as the README says, fed pixels in the range its metadata names.
    with ModelServer(logged.model_uri, tracking_uri) as served:
        assert np.argmax(served.predict(images[:64]), axis=1).tolist() == classes[:64]


def test_a_run_that_fails_for_good_is_failed_and_its_next_attempt_finishes_it(
    idx_dir, artifacts, tracked_environment, client
):
    """A resume that cannot continue (another batch size than its checkpoints') fails the run for
    good: its MLflow run is FAILED; the next attempt with the run's own settings continues the
    same MLflow run to FINISHED, its first epoch still there once."""
    run = ["run", "--dataset", f"idx:{idx_dir}", "--run-name", "failing", "--artifacts", artifacts]
    run += ["--experiment", "failures"]
    first = trainflow(*run, "--epochs", "1", env=tracked_environment)
    assert first.returncode == 0, first.stderr[-3000:]

    refused = trainflow(*run, "--epochs", "2", "--batch-size", "16", env=tracked_environment)
    assert refused.returncode == 2, refused.stderr[-3000:]
    (failed,) = runs_named(client, "failures", "failing")
    assert failed.info.status == "FAILED"

    again = trainflow(*run, "--epochs", "2", env=tracked_environment)
    assert again.returncode == 0, again.stderr[-3000:]
    (finished,) = runs_named(client, "failures", "failing")
    assert finished.info.run_id == failed.info.run_id and finished.info.status == "FINISHED"
    assert [step for step, _ in history_of(client, finished.info.run_id, "loss")] == [1, 2]


def test_an_unreachable_tracking_server_is_one_line_and_nothing_is_trained(
    idx_dir, artifacts, server_environment
):
    from app.stack.prefect_server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    completed = trainflow(
        "run",
        "--dataset",
        f"idx:{idx_dir}",
        "--mlflow",
        url,
        "--run-name",
        "untracked",
        "--artifacts",
        artifacts,
        env=server_environment,
    )
    assert completed.returncode == 2
    (line,) = completed.stderr.strip().splitlines()[-1:]
    assert (
        line.startswith("trainflow: error:") and url in line and "Traceback" not in completed.stderr
    )
    assert not (artifacts / "runs" / "untracked" / "checkpoints").exists()


def test_an_epoch_trained_again_or_sent_again_is_logged_once(client, mlflow_server):
    """The exactly-once rule itself: an epoch the run holds is not sent again, even with another
    value and end time (trained again after a crash); a request whose reply was lost and that the
    client sent again adds nothing (the same points)."""
    from trainflow.tracking.epochs import EpochLog

    experiment = client.create_experiment("exactly-once")
    run_id = client.create_run(experiment).info.run_id
    EpochLog(client, run_id).send({"loss": [0.9, 0.5]}, [1_000, 2_000])
    retrained = {"loss": [0.9, 0.6, 0.4]}  # epoch 2 again, from an older checkpoint
    EpochLog(client, run_id).send(retrained, [1_000, 2_500, 3_000])
    assert history_of(client, run_id, "loss") == [(1, 0.9), (2, 0.5), (3, 0.4)]

    from trainflow.tracking.connection import client_for

    with LinkProxy(mlflow_server.url) as proxy:
        proxy.lose_reply_once(lambda method, path: path.endswith("/runs/log-batch"))
        through_proxy = client_for(proxy.endpoint)
        EpochLog(through_proxy, run_id).send({"loss": [0.9, 0.5, 0.4, 0.3]}, [1, 2, 3, 4_000])
        sent = [request for request in proxy.requests if request.path.endswith("log-batch")]
    client_for_server(mlflow_server)
    assert len(sent) == 2  # the lost one, and the client's retry
    assert history_of(client, run_id, "loss") == [(1, 0.9), (2, 0.5), (3, 0.4), (4, 0.3)]


def test_epochs_sent_while_the_server_is_away_arrive_when_it_answers_again(
    client, mlflow_server, caplog
):
    """Training goes on while the tracking server refuses requests; the epochs of the checkpoints
    committed meanwhile arrive with the first commit after it answers again."""
    from trainflow.tracking.epochs import EpochSender
    from trainflow.tracking.identity import TrackedRun

    experiment = client.create_experiment("outage")
    run_id = client.create_run(experiment).info.run_id

    def committed(epochs: int) -> ResumeState:
        history = {"loss": [1.0 / epoch for epoch in range(1, epochs + 1)]}
        ends = [1_000 * epoch for epoch in range(1, epochs + 1)]
        return ResumeState(
            model_kind="mlp",
            data_fingerprint="f",
            seed=0,
            batch_size=1,
            history=history,
            epoch_ends_ms=ends,
        )

    with LinkProxy(mlflow_server.url) as proxy:
        tracked = TrackedRun(uri=proxy.endpoint, experiment_id=experiment, run_id=run_id)
        with EpochSender(tracked) as sender:
            sender.send(committed(1))
            wait_for(lambda: len(history_of(client, run_id, "loss")) == 1)
            proxy.refuse(lambda method, path: True, 503, "ServiceUnavailable")
            sender.send(committed(2))
            wait_for(lambda: "did not take the epochs" in caplog.text)
            proxy.stop_refusing()
            sender.send(committed(3))
            wait_for(lambda: len(history_of(client, run_id, "loss")) == 3)
    client_for_server(mlflow_server)
    assert [step for step, _ in history_of(client, run_id, "loss")] == [1, 2, 3]


def client_for_server(mlflow_server) -> None:
    from trainflow.tracking.connection import client_for

    client_for(mlflow_server.url)  # MLflow's own functions back on the server itself


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_without_a_tracking_uri_mlflow_is_not_imported():
    """The whole command line, flows and stages import without MLflow; a run imports it only in
    the stages of a tracked run (checked by the import contract and this)."""
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    code = (
        "import sys, app.cli, flows.training, flows.retraining, tasks.train_model, "
        "tasks.track_run, tasks.record_run; assert 'mlflow' not in sys.modules, 'mlflow imported'"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


def test_a_tracked_run_leaves_the_process_environment_as_it_was(mlflow_server, monkeypatch):
    """MLflow exports the URI it is given into the environment: a tracked run must not make the
    later runs of the same process (a worker, a test session) tracked too."""
    from trainflow.config import RunConfig
    from trainflow.tracking.connection import answering_client

    exported_by_mlflow = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    for name in exported_by_mlflow:
        monkeypatch.delenv(name, raising=False)
    answering_client(mlflow_server.url)
    assert not [name for name in exported_by_mlflow if name in os.environ]
    assert RunConfig(dataset="mnist").tracking_uri is None
