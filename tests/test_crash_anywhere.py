"""SIGKILL a real `trainflow run` process at random moments, run it again with the same run name,
and require that every trial completes with a loadable model whose weights equal, bit for bit,
those of a run that was never interrupted.

The kill moments are drawn from a seeded generator (TRAINFLOW_CRASH_SEED to replay a failure):
anywhere in the process's life, and aimed at a checkpoint write, persisting and evaluating.
"""

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import pytest

from tests.conftest import TRAINFLOW, synthetic_images, write_idx_pair
from trainflow.checkpoints.compare import differing_arrays

CRASH_SEED = int(os.environ.get("TRAINFLOW_CRASH_SEED", time.time_ns() % 1_000_000))
DEFAULT_TRIALS = 10
SLOW_TRIALS = 20
PROCESS_TIMEOUT = 300
POLL_SECONDS = 0.002
KILL_ATTEMPTS = 3


@dataclass
class Reference:
    """The uninterrupted run: its summary and when its phases began (seconds after start)."""

    summary: dict
    training_started: float
    persisting_started: float
    finished: float


def run_arguments(source: Path, artifacts: Path, run_name: str) -> list[str]:
    return [
        TRAINFLOW,
        "run",
        "--dataset",
        f"idx:{source}",
        "--epochs",
        "3",
        "--patience",
        "10",
        "--checkpoint-every",
        "5",
        "--deterministic",
        "--run-name",
        run_name,
        "--artifacts",
        str(artifacts),
        "--json",
    ]


def start(arguments: list[str], environment: dict) -> subprocess.Popen:
    return subprocess.Popen(
        arguments, env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def wait_for(process: subprocess.Popen, ready, timeout: float) -> bool:
    """Poll until `ready()` or the process ends; True if ready came first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(POLL_SECONDS)
    return False


@pytest.fixture(scope="module")
def crash_setup(tmp_path_factory, prefect_server):
    """Data, environment and the uninterrupted reference run, shared by the trials."""
    root = tmp_path_factory.mktemp("crash")
    source = root / "idx"
    write_idx_pair(source, "t10k", *synthetic_images(2000, seed=1))
    artifacts = root / "artifacts"
    environment = {key: value for key, value in os.environ.items()}
    environment.update(PREFECT_API_URL=prefect_server, PYTHONUNBUFFERED="1")
    run_dir = artifacts / "runs" / "reference"
    began = time.monotonic()
    process = start(run_arguments(source, artifacts, "reference"), environment)
    wait_for(process, lambda: (run_dir / "checkpoints" / "resume").is_dir(), PROCESS_TIMEOUT)
    training_started = time.monotonic() - began
    wait_for(process, lambda: (run_dir / "model").is_dir(), PROCESS_TIMEOUT)
    persisting_started = time.monotonic() - began
    stdout, _ = process.communicate(timeout=PROCESS_TIMEOUT)
    assert process.returncode == 0
    reference = Reference(
        json.loads(stdout), training_started, persisting_started, time.monotonic() - began
    )
    return source, artifacts, environment, reference


def trial_kinds(count: int) -> list[str]:
    kinds = ["checkpoint-write", "persist", "evaluate"]
    return [kinds[index] if index < len(kinds) else "random" for index in range(count)]


def kill_during(crash_setup, run_name: str, kind: str, delay: float) -> subprocess.Popen:
    """Start the run and SIGKILL it at the moment `kind` names (`random`: after `delay` s)."""
    source, artifacts, environment, _ = crash_setup
    run_dir = artifacts / "runs" / run_name
    process = start(run_arguments(source, artifacts, run_name), environment)
    if kind == "random":
        wait_for(process, lambda: False, delay)
    elif kind == "checkpoint-write":
        resume_dir = run_dir / "checkpoints" / "resume"
        wait_for(process, lambda: any(resume_dir.glob("*.tmp-*")), PROCESS_TIMEOUT)
    elif kind == "persist":
        wait_for(process, lambda: (run_dir / "model").is_dir(), PROCESS_TIMEOUT)
    else:
        marker = run_dir / "stages" / "persist_model.json"
        wait_for(process, marker.exists, PROCESS_TIMEOUT)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=PROCESS_TIMEOUT)
    return process


def run_trial(crash_setup, index: int, kind: str) -> None:
    source, artifacts, environment, reference = crash_setup
    generator = random.Random(CRASH_SEED * 1000 + index)
    latest = reference.finished * 0.9
    for attempt in range(KILL_ATTEMPTS):
        # A run can be faster than the reference: if it finished before the kill, draw an
        # earlier moment and kill a new run.
        run_name = f"trial-{index}-{attempt}"
        delay = generator.uniform(reference.training_started * 0.8, latest)
        context = f"trial {index} ({kind}, {delay:.2f} s, TRAINFLOW_CRASH_SEED={CRASH_SEED})"
        if kill_during(crash_setup, run_name, kind, delay).returncode == -signal.SIGKILL:
            break
        latest = delay
    else:
        pytest.fail(f"{context}: every run ended before the kill")

    rerun = start(run_arguments(source, artifacts, run_name), environment)
    stdout, _ = rerun.communicate(timeout=PROCESS_TIMEOUT)
    assert rerun.returncode == 0, context
    summary = json.loads(stdout)
    assert summary["epochs_completed"] == reference.summary["epochs_completed"], context
    assert keras.models.load_model(summary["model_path"]).count_params() > 0, context
    weights, reference_weights = (
        Path(summary["weights_path"]),
        Path(reference.summary["weights_path"]),
    )
    assert differing_arrays(weights, reference_weights) == [], context
    assert summary["test_accuracy"] == reference.summary["test_accuracy"], context


@pytest.mark.parametrize(("index", "kind"), list(enumerate(trial_kinds(DEFAULT_TRIALS))))
def test_killed_run_resumes_to_the_uninterrupted_result(crash_setup, index, kind):
    run_trial(crash_setup, index, kind)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(DEFAULT_TRIALS, DEFAULT_TRIALS + SLOW_TRIALS))
def test_more_random_kills(crash_setup, index):
    run_trial(crash_setup, index, "random")
