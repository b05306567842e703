"""Artifacts in a real S3-compatible store (moto's server on 127.0.0.1): a run killed on one
"machine" resumes on another that has nothing local, bit for bit; two machines cannot run one run
at once; faults of the store are retried, and what the user must fix is one line.

A "machine" is a working directory, HOME and TMPDIR of its own (so its own scratch mirror and
PREFECT_HOME): it shares nothing with the other but the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, TRAINFLOW
from tests.s3_server import S3Server, s3_server
from trainflow.checkpoints.compare import differing_arrays
from trainflow.checkpoints.state import ResumeState
from trainflow.storage.digests import sha256_of_files
from trainflow.training.callbacks.faults import KILL_WITHOUT_FLUSH

STEPS_PER_EPOCH = 9  # idx_dir: 280 training examples in batches of 32
RUN_TIMEOUT = 300


@pytest.fixture(scope="module")
def store():
    with s3_server() as server:
        yield server


@pytest.fixture
def bucket(store: S3Server, request) -> str:
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    return store.make_bucket(name)


def machine(tmp_path: Path, name: str, store: S3Server) -> tuple[Path, dict[str, str]]:
    """A working directory and environment standing for a machine of its own."""
    root = tmp_path / name
    for part in ("cwd", "home", "tmp"):
        (root / part).mkdir(parents=True)
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "PREFECT_"))
    }
    environment.update(
        HOME=str(root / "home"),
        TMPDIR=str(root / "tmp"),
        PREFECT_HOME=str(root / "home" / ".prefect"),
        PYTHONPATH=str(REPO_ROOT),
        PYTHONUNBUFFERED="1",
        **store.environment,
    )
    return root / "cwd", environment


def trainflow(cwd: Path, environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TRAINFLOW, *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def run_options(idx_dir: Path, artifacts: str, run_name: str, *extra: str) -> list[str]:
    return [
        "run",
        "--dataset",
        f"idx:{idx_dir}",
        "--artifacts",
        artifacts,
        "--run-name",
        run_name,
        "--epochs",
        "3",
        "--patience",
        "10",
        "--deterministic",
        "--checkpoint-every",
        "4",
        "--json",
        *extra,
    ]


def committed_checkpoints(store: S3Server, bucket: str, run_prefix: str) -> list[ResumeState]:
    """The resume checkpoints in the store whose manifest names weights with that sha256, newest
    first: read with boto3, not with the code under test."""
    client = store.client()
    resume = f"{run_prefix}/checkpoints/resume/"
    keys = set(store.keys(bucket, resume))
    states = []
    for key in sorted(keys, reverse=True):
        if not key.endswith(".json"):
            continue
        state = ResumeState.model_validate_json(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        weights_key = resume + state.weights_file
        if weights_key in keys:
            weights = client.get_object(Bucket=bucket, Key=weights_key)["Body"].read()
            digest = hashlib.sha256(state.weights_file.encode() + b"\0" + weights).hexdigest()
            if digest == state.weights_sha256:
                states.append(state)
    return states


def nothing_local_named_after_the_url(cwd: Path) -> None:
    assert not list(cwd.rglob("s3:*")), "a URL became a local path"


def test_a_run_killed_on_one_machine_resumes_on_another_bit_for_bit(
    store: S3Server, bucket: str, idx_dir: Path, tmp_path: Path
):
    artifacts = f"s3://{bucket}/team"
    kill_step = 2 * STEPS_PER_EPOCH + 3  # mid-epoch 3, after the step-20 checkpoint

    cwd_a, machine_a = machine(tmp_path, "machine-a", store)
    killed = trainflow(
        cwd_a,
        {**machine_a, KILL_WITHOUT_FLUSH: "1"},
        *run_options(idx_dir, artifacts, "moved", "--kill-at-step", str(kill_step)),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    committed = committed_checkpoints(store, bucket, "team/runs/moved")
    assert committed, "machine A committed no checkpoint to the store"
    newest = committed[0].global_step
    assert 0 < newest <= kill_step

    cwd_b, machine_b = machine(tmp_path, "machine-b", store)
    assert not any(Path(machine_b["TMPDIR"]).iterdir()) and not any(cwd_b.iterdir())
    resumed = trainflow(
        cwd_b,
        machine_b,
        *run_options(idx_dir, artifacts, "moved", "--kill-at-step", str(kill_step)),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    assert summary["resumed_from_step"] == newest  # 0 checkpointed steps trained again
    assert f"Resuming run moved from checkpoint step-{newest:09d}.weights.h5" in resumed.stderr
    assert summary["weights_path"] == f"{artifacts}/runs/moved/model/model.weights.h5"

    cwd_c, machine_c = machine(tmp_path, "machine-c", store)
    reference = trainflow(cwd_c, machine_c, *run_options(idx_dir, artifacts, "whole"))
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert json.loads(reference.stdout)["resumed_from_step"] is None

    moved = store.download(bucket, "team/runs/moved", tmp_path / "moved")
    whole = store.download(bucket, "team/runs/whole", tmp_path / "whole")
    weights = Path("model/model.weights.h5")
    assert differing_arrays(moved / weights, whole / weights) == []
    assert sha256_of_files([moved / weights]) == sha256_of_files([whole / weights])
    final = Path(f"checkpoints/resume/step-{3 * STEPS_PER_EPOCH:09d}.weights.h5")
    assert differing_arrays(moved / final, whole / final) == []  # optimizer state too
    for cwd in (cwd_a, cwd_b, cwd_c):
        nothing_local_named_after_the_url(cwd)
