"""Artifacts in a real S3-compatible store (moto's server on 127.0.0.1): a run killed on one
"machine" resumes on another that has nothing local, bit for bit, and is one MLflow run (a real
`mlflow server`) with each epoch logged once.

A "machine" is a working directory, HOME and TMPDIR of its own (so its own scratch mirror and
PREFECT_HOME): it shares nothing with the other but the store.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.mlflow_runs import EPOCH_METRICS, history_of, runs_named
from tests.s3_server import CREDENTIALS, S3Server
from tests.store_machines import (
    STEPS_PER_EPOCH,
    committed_checkpoints,
    machine,
    nothing_local_named_after_the_url,
    run_options,
    trainflow,
)
from trainflow.checkpoints.compare import differing_arrays
from trainflow.storage.digests import sha256_of_files
from trainflow.tracking.connection import client_for
from trainflow.training.callbacks.faults import KILL_WITHOUT_FLUSH


def test_a_run_killed_on_one_machine_resumes_on_another_bit_for_bit(
    s3_store: S3Server, bucket: str, idx_dir: Path, tmp_path: Path, mlflow_server
):
    """Both machines track the run in MLflow: the MLflow run machine A created is the one B
    finishes, with each epoch once (A logged epochs 1 and 2, B epoch 3)."""
    artifacts = f"s3://{bucket}/team"
    kill_step = 2 * STEPS_PER_EPOCH + 3  # mid-epoch 3, after the step-20 checkpoint
    tracking = {"MLFLOW_TRACKING_URI": mlflow_server.url}
    experiment = ("--experiment", bucket)  # a fresh experiment in the session's server
    tracker = client_for(mlflow_server.url)

    cwd_a, machine_a = machine(tmp_path, "machine-a", s3_store)
    killed = trainflow(
        cwd_a,
        {**machine_a, **tracking, KILL_WITHOUT_FLUSH: "1"},
        *run_options(idx_dir, artifacts, "moved", "--kill-at-step", str(kill_step), *experiment),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    committed = committed_checkpoints(s3_store, bucket, "team/runs/moved")
    assert committed, "machine A committed no checkpoint to the store"
    newest = committed[0].global_step
    assert 0 < newest <= kill_step
    assert {state.lock_generation for state in committed} == {1}  # the run's first owner
    (left,) = runs_named(tracker, bucket, "moved")
    assert left.info.status == "RUNNING"  # as a killed process leaves it

    cwd_b, machine_b = machine(tmp_path, "machine-b", s3_store)
    assert not any(Path(machine_b["TMPDIR"]).iterdir()) and not any(cwd_b.iterdir())
    resumed = trainflow(
        cwd_b,
        {**machine_b, **tracking},
        *run_options(idx_dir, artifacts, "moved", "--kill-at-step", str(kill_step), *experiment),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    (finished,) = runs_named(tracker, bucket, "moved")
    assert finished.info.run_id == left.info.run_id and finished.info.status == "FINISHED"
    assert summary["mlflow_run_url"].endswith(f"/runs/{finished.info.run_id}")
    for key in EPOCH_METRICS:
        assert [step for step, _ in history_of(tracker, finished.info.run_id, key)] == [1, 2, 3]
    assert summary["resumed_from_step"] == newest  # 0 checkpointed steps trained again
    assert f"Resuming run moved from checkpoint step-{newest:09d}.weights.h5" in resumed.stderr
    assert summary["weights_path"] == f"{artifacts}/runs/moved/model/model.weights.h5"
    # B took the run over: what it wrote names the lease's next generation.
    assert committed_checkpoints(s3_store, bucket, "team/runs/moved")[0].lock_generation == 2
    record = s3_store.client().get_object(Bucket=bucket, Key="team/runs/moved/run.json")
    assert json.loads(record["Body"].read())["lock_generation"] == 2

    cwd_c, machine_c = machine(tmp_path, "machine-c", s3_store)
    reference = trainflow(cwd_c, machine_c, *run_options(idx_dir, artifacts, "whole"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert json.loads(reference.stdout)["resumed_from_step"] is None

    moved = s3_store.download(bucket, "team/runs/moved", tmp_path / "moved")
    whole = s3_store.download(bucket, "team/runs/whole", tmp_path / "whole")
    weights = Path("model/model.weights.h5")
    assert differing_arrays(moved / weights, whole / weights) == []
    assert sha256_of_files([moved / weights]) == sha256_of_files([whole / weights])
    final = Path(f"checkpoints/resume/step-{3 * STEPS_PER_EPOCH:09d}.weights.h5")
    assert differing_arrays(moved / final, whole / final) == []  # optimizer state too
    for cwd in (cwd_a, cwd_b, cwd_c):
        nothing_local_named_after_the_url(cwd)

    # The finished run, run again on a third machine: every stage B finished is skipped there
    # (the stages' records name their inputs by their place in the store, not by B's scratch).
    client = s3_store.client()
    stages = [key for key in s3_store.keys(bucket, "team/runs/moved/stages/")]
    assert len(stages) == 4
    before = {key: client.head_object(Bucket=bucket, Key=key)["ETag"] for key in stages}
    again = trainflow(cwd_c, machine_c, *run_options(idx_dir, artifacts, "moved"))
    assert again.returncode == 0, again.stderr[-3000:]
    for stage in ("persist_weights", "persist_model", "evaluate_model", "report_run"):
        assert f"Skipping {stage}: already done" in again.stderr
    assert before == {key: client.head_object(Bucket=bucket, Key=key)["ETag"] for key in stages}

    # The store's credentials are nowhere: not in what the runs printed, nor in any object.
    secrets = [CREDENTIALS["AWS_SECRET_ACCESS_KEY"], CREDENTIALS["AWS_ACCESS_KEY_ID"]]
    outputs = [killed.stdout, killed.stderr, resumed.stdout, resumed.stderr, reference.stderr]
    for key in s3_store.keys(bucket):
        outputs.append(client.get_object(Bucket=bucket, Key=key)["Body"].read().decode("latin-1"))
    assert not [secret for secret in secrets for output in outputs if secret in output]
