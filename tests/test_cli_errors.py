"""The errors of README's "When something goes wrong", through the real command line: each ends with
one line, `trainflow: error: …`, naming the input and the fix, exit status 2 and no traceback, and
damages nothing earlier; a run that fails for another reason exits with 1.

Disk faults use real file systems (a small tmpfs, filled up or made read-only), so they need the
right to mount: without it these tests are skipped, except in CI, where they fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from app.stack.prefect_server import free_port
from tests.conftest import IN_CI, STEPS_PER_EPOCH, synthetic_images, write_idx_pair
from tests.test_cli import trainflow

# The interrupted run: 3 epochs of idx_dir's 9 steps, a checkpoint every 4 steps, SIGKILLed right
# after step 13 (epoch 2), so that its newest checkpoint is step 12's, part-way through epoch 2.
CHECKPOINT_EVERY = 4
KILL_AT_STEP = STEPS_PER_EPOCH + 4
LAST_CHECKPOINT = 12
TMPFS_SIZE = "32m"
# Room left on the full disk: the run's small files fit, a resume checkpoint (about 1.2 MB of mlp
# weights and optimizer state) does not, so the resumed run fails at its first new checkpoint.
ROOM_LEFT = 256 * 1024
EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1


def assert_one_line_error(completed: subprocess.CompletedProcess, message: str) -> str:
    """The README's promise for an error the user can fix: the last line of stderr is
    `trainflow: error: …` with `message`, and there is no traceback. Returns that line."""
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("trainflow: error: "), last_line
    assert message in last_line, last_line
    assert "Traceback" not in completed.stderr
    return last_line


def committed_checkpoints(run_dir: Path) -> dict[str, bytes]:
    """The files of the run's resume checkpoints, by name."""
    return {path.name: path.read_bytes() for path in (run_dir / "checkpoints/resume").iterdir()}


@pytest.fixture
def interrupted_run(idx_dir, server_environment) -> Callable[[Path], list[str]]:
    """Start a run under the given artifacts directory and let it SIGKILL itself right after step
    13; returns its command line. The kill happens once per run (a marker records it), so running
    the same command again resumes the run from step 12's checkpoint."""

    def interrupt(artifacts: Path) -> list[str]:
        command = [
            "run",
            "--dataset",
            f"idx:{idx_dir}",
            "--epochs",
            "3",
            "--checkpoint-every",
            CHECKPOINT_EVERY,
            "--kill-at-step",
            KILL_AT_STEP,
            "--run-name",
            "interrupted",
            "--artifacts",
            artifacts,
            "--json",
        ]
        trainflow(*command, env=server_environment, check_status=-signal.SIGKILL)
        return command

    return interrupt


def test_resuming_with_another_model_names_the_checkpoints_settings(
    interrupted_run, artifacts, server_environment
):
    command = interrupted_run(artifacts)
    run_dir = artifacts / "runs" / "interrupted"
    checkpoints = committed_checkpoints(run_dir)
    completed = trainflow(
        *command, "--model", "cnn", env=server_environment, check_status=EXIT_USER_ERROR
    )
    line = assert_one_line_error(
        completed, "run interrupted has checkpoints of model mlp, not model cnn; "
    )
    assert "resume it with its own --model, --optimizer, --learning-rate, --dataset" in line
    assert line.endswith("or pass --fresh or another --run-name")
    assert committed_checkpoints(run_dir) == checkpoints


# Why a sitecustomize module: no input of the command line can make the loss diverge. Data is
# checked (finite pixels in [0, 1], labels 0-9), the optimizer and its learning rate are fixed, and
# a diverged state is never checkpointed, so neither data nor a resumed run can bring in a NaN. The
# module, found on PYTHONPATH by the `trainflow` process at start-up, stands in for an exploding
# update: the models it builds have a NaN-filled output layer.
DIVERGING_MODELS = """
import numpy as np

from trainflow.training import models

build_finite_classifier = models.build_classifier


def build_diverged_classifier(*args):
    model, contract = build_finite_classifier(*args)
    kernel = model.layers[-1].kernel
    kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))
    return model, contract


models.build_classifier = build_diverged_classifier
"""


def test_a_diverging_loss_is_one_line_and_nothing_is_persisted(
    tmp_path, idx_dir, artifacts, server_environment
):
    customizations = tmp_path / "site"
    customizations.mkdir()
    (customizations / "sitecustomize.py").write_text(DIVERGING_MODELS)
    environment = {**server_environment, "PYTHONPATH": str(customizations)}
    completed = trainflow(
        "run",
        "--dataset",
        f"idx:{idx_dir}",
        "--epochs",
        "2",
        "--run-name",
        "diverging",
        "--artifacts",
        artifacts,
        env=environment,
        check_status=EXIT_USER_ERROR,
    )
    line = assert_one_line_error(
        completed, "training diverged: the loss became nan in epoch 1; nothing was persisted"
    )
    assert "start over (--fresh) with another --seed or --batch-size" in line
    run_dir = artifacts / "runs" / "diverging"
    assert not (run_dir / "model").exists()
    assert not list((run_dir / "checkpoints").rglob("*.h5"))


def test_an_unsafe_keras_file_is_refused_by_evaluate(
    tmp_path, idx_dir, artifacts, server_environment
):
    """A finished run whose model.keras was replaced by a model with a Lambda layer (Python code
    that loading would run): `trainflow evaluate` refuses to load it and leaves the run as it was."""
    import keras

    summary = json.loads(
        trainflow(
            "run",
            "--dataset",
            f"idx:{idx_dir}",
            "--epochs",
            "1",
            "--artifacts",
            artifacts,
            "--json",
            env=server_environment,
        ).stdout
    )
    inputs = keras.Input(shape=(28, 28))
    outputs = keras.layers.Lambda(lambda images: images * 2)(inputs)
    keras.Model(inputs, outputs).save(summary["model_path"])
    evaluation = Path(summary["evaluation_path"]).read_bytes()
    other_data = tmp_path / "other"
    write_idx_pair(other_data, "t10k", *synthetic_images(400, seed=2))

    completed = trainflow(
        "evaluate",
        summary["run_dir"],
        "--dataset",
        f"idx:{other_data}",
        env=server_environment,
        check_status=EXIT_USER_ERROR,
    )
    line = assert_one_line_error(
        completed, f"{summary['model_path']} holds Python code (a Lambda layer or a lambda)"
    )
    assert "safe mode" in line and "Use a model trainflow saved" in line
    assert Path(summary["evaluation_path"]).read_bytes() == evaluation


def test_another_failure_exits_1_and_says_how_to_resume(idx_dir, artifacts, cli_environment):
    """A lost connection (a Prefect server that does not answer) is not the user's input: the run
    failed, exit status 1, one line that says to run again with the same --run-name."""
    api_url = f"http://127.0.0.1:{free_port()}/api"
    completed = trainflow(
        "run",
        "--dataset",
        f"idx:{idx_dir}",
        "--epochs",
        "1",
        "--run-name",
        "unreachable",
        "--artifacts",
        artifacts,
        env={**cli_environment, "PREFECT_API_URL": api_url},
        check_status=EXIT_RUN_FAILED,
    )
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        f"trainflow: run failed: RuntimeError: Failed to reach API at {api_url}"
    )
    assert last_line.endswith(
        "(run again with the same --run-name to resume; --debug shows the traceback)"
    )
    assert "Traceback" not in completed.stderr


@pytest.fixture(scope="session")
def mounting_allowed(tmp_path_factory) -> None:
    """Skip (fail in CI) unless this process may mount file systems: a probe mounts a tmpfs."""
    probe = tmp_path_factory.mktemp("mount-probe")
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
            check=False,
            capture_output=True,
            text=True,
        )
    except OSError as error:
        reason = f"cannot run mount: {error}"
    else:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(probe)], check=True)
            return
        reason = f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}"
    if IN_CI:
        pytest.fail(f"disk fault tests must run in CI, but {reason}")
    pytest.skip(reason)


@pytest.fixture
def small_disk(tmp_path, mounting_allowed) -> Iterator[Path]:
    """A fresh tmpfs of TMPFS_SIZE, unmounted afterwards whatever happens."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@contextmanager
def full_disk(disk: Path) -> Iterator[None]:
    """Fill the file system, leaving ROOM_LEFT free; free it again afterwards."""
    filler = disk / "filler"
    status = os.statvfs(disk)
    descriptor = os.open(filler, os.O_CREAT | os.O_WRONLY)
    try:
        os.posix_fallocate(descriptor, 0, status.f_bavail * status.f_frsize - ROOM_LEFT)
    finally:
        os.close(descriptor)
    try:
        yield
    finally:
        filler.unlink()


@contextmanager
def read_only_artifacts(disk: Path) -> Iterator[None]:
    """The whole file system of artifacts/ remounted read-only; read-write again afterwards."""
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)


# Two product bugs turn a read-only artifacts/ into `trainflow: run failed: OSError: [Errno 30]
# Read-only file system: …` and exit status 1.
@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        (full_disk, "No space left on device"),
        (read_only_artifacts, "Read-only file system"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_a_disk_fault_is_one_line_then_the_same_command_resumes(
    fault: Callable[[Path], AbstractContextManager[None]],
    problem: str,
    small_disk,
    interrupted_run,
    server_environment,
):
    """An interrupted run on a real file system that then fills up or turns read-only: running it
    again ends with one line naming the file it could not write, its checkpoints stay as they
    were, and once the disk is fixed the same command resumes from the newest checkpoint."""
    artifacts = small_disk / "artifacts"
    command = interrupted_run(artifacts)
    run_dir = artifacts / "runs" / "interrupted"
    checkpoints = committed_checkpoints(run_dir)
    with fault(small_disk):
        completed = trainflow(*command, env=server_environment, check_status=EXIT_USER_ERROR)
        line = assert_one_line_error(completed, f"trainflow: error: cannot write {artifacts}/")
        assert f": {problem}; free disk space or make the artifacts directory writable" in line
        assert line.endswith("run the same command again: it continues from the last checkpoint")
    assert committed_checkpoints(run_dir) == checkpoints
    summary = json.loads(trainflow(*command, env=server_environment).stdout)
    assert summary["resumed_from_step"] == LAST_CHECKPOINT
    assert summary["epochs_completed"] == 3
