"""Machines that share nothing but an object store, for the tests of artifacts in a store.

A "machine" is a working directory, HOME and TMPDIR of its own (so its own scratch mirror and
PREFECT_HOME). The checks read the store with boto3, never with the code under test.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from tests.conftest import REPO_ROOT, TRAINFLOW
from tests.s3_server import S3Server
from trainflow.checkpoints.state import ResumeState

STEPS_PER_EPOCH = 9  # idx_dir: 280 training examples in batches of 32
RUN_TIMEOUT = 300


def machine(tmp_path: Path, name: str, store: S3Server) -> tuple[Path, dict[str, str]]:
    """A working directory and environment standing for a machine of its own."""
    root = tmp_path / name
    for part in ("cwd", "home", "tmp"):
        (root / part).mkdir(parents=True)
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "PREFECT_"))
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


def trainflow(
    cwd: Path, environment: dict[str, str], *arguments: str
) -> subprocess.CompletedProcess:
    """`trainflow ARGUMENTS` on that machine, to its end."""
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
        state = ResumeState.model_validate_json(
            client.get_object(Bucket=bucket, Key=key)["Body"].read()
        )
        weights_key = resume + state.weights_file
        if weights_key in keys:
            weights = client.get_object(Bucket=bucket, Key=weights_key)["Body"].read()
            digest = hashlib.sha256(state.weights_file.encode() + b"\0" + weights).hexdigest()
            if digest == state.weights_sha256:
                states.append(state)
    return states


def nothing_local_named_after_the_url(cwd: Path) -> None:
    assert not list(cwd.rglob("s3:*")), "a URL became a local path"
