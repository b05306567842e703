"""Faults of a real S3-compatible store: it stops in the middle of a run (moto's server stopped and
started again on the same port, with its objects), and the stores a user must fix (a missing
bucket, refused credentials, an endpoint that does not answer, a protocol not installed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.stack.prefect_server import LOOPBACK, free_port
from bench.store import wait_until_listening
from tests.conftest import TRAINFLOW
from tests.s3_server import CREDENTIALS, S3Server
from tests.store_machines import (
    RUN_TIMEOUT,
    STEPS_PER_EPOCH,
    committed_checkpoints,
    machine,
    nothing_local_named_after_the_url,
    run_options,
    trainflow,
)

# Long enough that the run is still training when the store stops: after the first commit the
# test sees, 20 more commits and the model's export remain, each a round trip to the store.
EPOCHS = 10
LONG_RUN = ("--epochs", str(EPOCHS), "--patience", str(EPOCHS))


def start_run(cwd: Path, environment: dict[str, str], arguments: list[str], log: Path):
    with log.open("w") as stream:
        return subprocess.Popen(
            [TRAINFLOW, *arguments],
            cwd=cwd,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=stream,
            text=True,
            start_new_session=True,
        )


def wait_until(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while not condition():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@contextmanager
def store_outage(store: S3Server, bucket: str, idx_dir: Path, tmp_path: Path):
    """Start a long run on "machine A"; once it has committed a checkpoint, stop the store and
    wait until the run has met the outage (its retry warning is in the log); yield the run's
    process, log and arguments; start the store again (with its objects) on leaving."""
    cwd, environment = machine(tmp_path, "machine-a", store)
    log = tmp_path / "run.log"
    arguments = run_options(idx_dir, f"s3://{bucket}/team", "outage", *LONG_RUN)
    process = start_run(cwd, environment, arguments, log)
    try:
        wait_until(
            lambda: committed_checkpoints(store, bucket, "team/runs/outage"),
            process,
            "a checkpoint",
        )
        store.stop()
        wait_until(lambda: "trying again" in log.read_text(), process, "the outage was noticed")
        yield process, log, arguments
    finally:
        store.start()


def test_a_store_that_stops_mid_run_is_waited_for_and_nothing_is_set_aside(
    s3_store: S3Server, bucket: str, idx_dir: Path, tmp_path: Path
):
    with store_outage(s3_store, bucket, idx_dir, tmp_path) as (process, log, _):
        time.sleep(1)
    stdout, _ = process.communicate(timeout=RUN_TIMEOUT)
    assert process.returncode == 0, log.read_text()[-3000:]
    assert json.loads(stdout)["resumed_from_step"] is None  # it waited: nothing started over
    assert s3_store.keys(bucket, "team/runs/outage/checkpoints/quarantine") == []
    assert "Set aside" not in log.read_text()
    # What the store holds after the outage: the run, whole. Every manifest names weights that
    # are there with its hash, the newest is the last step, and the model and record are there.
    run = "team/runs/outage"
    manifests = [
        k for k in s3_store.keys(bucket, f"{run}/checkpoints/resume/") if k.endswith("json")
    ]
    committed = committed_checkpoints(s3_store, bucket, run)
    assert len(committed) == len(manifests) >= 1
    assert committed[0].global_step == EPOCHS * STEPS_PER_EPOCH
    keys = s3_store.keys(bucket, f"{run}/")
    for key in ("model/model.weights.h5", "model/model.keras", "model/saved_model/saved_model.pb"):
        assert f"{run}/{key}" in keys
    record = s3_store.client().get_object(Bucket=bucket, Key=f"{run}/run.json")["Body"].read()
    assert json.loads(record)["status"] == "completed"


def test_a_run_killed_while_the_store_is_down_resumes_from_its_newest_commit(
    s3_store: S3Server, bucket: str, idx_dir: Path, tmp_path: Path
):
    with store_outage(s3_store, bucket, idx_dir, tmp_path) as (process, _, arguments):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    newest = committed_checkpoints(s3_store, bucket, "team/runs/outage")[0].global_step

    cwd_b, machine_b = machine(tmp_path, "machine-b", s3_store)
    resumed = trainflow(cwd_b, machine_b, *arguments)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["resumed_from_step"] == newest
    assert f"from checkpoint step-{newest:09d}.weights.h5" in resumed.stderr


@pytest.fixture
def refusing_store(tmp_path: Path):
    """A second moto server that checks credentials (none are known to it)."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(TRAINFLOW).with_name("moto_server")), "-H", LOOPBACK, "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://{LOOPBACK}:{port}"
    wait_until_listening(endpoint)
    yield endpoint
    server.terminate()
    server.wait()


@pytest.mark.parametrize(
    "case", ["missing bucket", "wrong credentials", "unreachable endpoint", "protocol"]
)
def test_a_store_the_user_must_fix_is_one_line_and_exit_2(
    case: str, s3_store: S3Server, idx_dir: Path, tmp_path: Path, request
):
    cwd, environment = machine(tmp_path, "machine-a", s3_store)
    artifacts, expected = {
        "missing bucket": ("s3://no-such-bucket/team", "bucket 'no-such-bucket' does not exist"),
        "wrong credentials": ("s3://any/team", "refused the credentials"),
        "unreachable endpoint": ("s3://any/team", "cannot reach the store s3://any/team"),
        "protocol": ("gs://any/team", "the gs:// protocol is not installed; install gcsfs"),
    }[case]
    if case == "wrong credentials":
        environment["AWS_ENDPOINT_URL"] = request.getfixturevalue("refusing_store")
    if case == "unreachable endpoint":
        environment["AWS_ENDPOINT_URL"] = f"http://{LOOPBACK}:{free_port()}"
    completed = trainflow(cwd, environment, *run_options(idx_dir, artifacts, "never"))
    assert completed.returncode == 2, completed.stderr[-3000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("trainflow: error: ") and expected in lines[0]
    assert artifacts.split("/")[2] in lines[0] or case == "protocol"
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in completed.stderr
    nothing_local_named_after_the_url(cwd)
    assert not list(cwd.iterdir())
