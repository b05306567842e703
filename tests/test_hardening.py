"""Concurrent runs, disk faults, diverging training, unsafe model files and bad parameters: a clear
error, and nothing earlier lost."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tasks.persist_model import persist_model
from tasks.persist_weights import persist_weights
from tasks.train_model import train_model
from tests.conftest import TRAINFLOW
from trainflow.checkpoints.store import load_latest_checkpoint
from trainflow.errors import (
    DataSourceError,
    DownloadError,
    NonFiniteLossError,
    StorageError,
    UnsafeModelError,
)
from trainflow.orchestration.retry_policy import retry_if_transient
from trainflow.runs.lock import RunInUseError
from trainflow.runs.records import open_run
from trainflow.training.models import load_saved_model

HOLD_THE_LOCK = """
import sys, time
from pathlib import Path
from trainflow.paths import ArtifactPaths
from trainflow.runs.lock import lock_run
lock = Path(sys.argv[1])
lock_run(ArtifactPaths.at(lock.parent.parent).run(lock.stem))
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def lock_holder(run):
    """Another process holding run `unit`'s lock; yields it (kill it to simulate a crash)."""
    _, _, paths = run
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(paths.lock)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    yield holder
    holder.kill()
    holder.wait()


def test_a_second_process_on_the_same_run_name_is_refused_naming_the_holder(run, lock_holder):
    config, _, paths = run
    with pytest.raises(RunInUseError, match=f"run unit is in use by process {lock_holder.pid}"):
        open_run(config, "unit", flow_run_id=None)
    assert not paths.record.exists()  # nothing of the run was touched


def test_a_crashed_holder_leaves_no_stuck_lock(run, lock_holder):
    config, _, paths = run
    lock_holder.send_signal(signal.SIGKILL)
    lock_holder.wait()
    assert open_run(config, "unit", flow_run_id=None) == paths
    assert json.loads(paths.record.read_text())["status"] == "running"


def test_cli_refuses_a_run_name_in_use_with_one_line(run, lock_holder, server_environment):
    config, _, _ = run
    completed = subprocess.run(
        [TRAINFLOW, "run", "--dataset", config.dataset, "--artifacts", str(config.artifacts)]
        + ["--run-name", "unit", "--epochs", "1"],
        env=server_environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        f"trainflow: error: run unit is in use by process {lock_holder.pid}"
    )
    assert "Traceback" not in completed.stderr


def test_runs_with_different_names_proceed_in_parallel(run, server_environment, tmp_path):
    """Both also prepare the same data at the same moment (a fresh artifacts directory)."""
    config, _, _ = run
    config = config.model_copy(update={"artifacts": tmp_path / "parallel"})
    processes = {
        name: subprocess.Popen(
            [TRAINFLOW, "run", "--json", "--dataset", config.dataset, "--epochs", "2"]
            + ["--artifacts", str(config.artifacts), "--run-name", name],
            env=server_environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for name in ("left", "right")
    }
    summaries = {
        name: json.loads(process.communicate(timeout=600)[0]) for name, process in processes.items()
    }
    for name, summary in summaries.items():
        assert summary["run_name"] == name and summary["epochs_completed"] == 2
        assert summary["model_path"] == str(
            config.artifacts.resolve() / "runs" / name / "model" / "model.keras"
        )
    assert summaries["left"]["test_accuracy"] == summaries["right"]["test_accuracy"]  # same seed


class DiskFault:
    """Make `owner.<method>`, a write, fail with `error_number` on its `fail_at`-th call for a path
    under `directory`, as a full or read-only disk would. The path is the call's argument number
    `path_index` (0: `self`)."""

    def __init__(self, monkeypatch, owner, method, path_index, directory, fail_at, error_number):
        self.calls = 0
        original = getattr(owner, method)

        def failing_write(*args, **kwargs):
            if str(args[path_index]).startswith(str(directory)):
                self.calls += 1
                if self.calls == fail_at:
                    raise OSError(error_number, os.strerror(error_number), str(args[path_index]))
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, method, failing_write)


@pytest.mark.parametrize("error_number", [errno.ENOSPC, errno.EROFS])
def test_disk_fault_during_a_checkpoint_keeps_the_previous_one_and_resumes(
    run, monkeypatch, error_number
):
    config, data, paths = run
    with monkeypatch.context() as patch:
        # Path.write_bytes is how the checkpoint writer writes a weights file.
        DiskFault(patch, Path, "write_bytes", 0, paths.resume_dir, 3, error_number)
        with pytest.raises(
            StorageError, match="cannot write .*step-.*weights.h5: .*same command again"
        ):
            train_model(config, data, paths)
    previous = load_latest_checkpoint(paths)
    assert previous.epochs_done == 2  # the checkpoints of epochs 1 and 2 are intact
    assert not paths.quarantine_dir.exists()  # nothing half-written was left behind
    assert not list(paths.resume_dir.glob("*.tmp-*"))
    resumed = train_model(config, data, paths)  # the disk is fixed
    assert resumed.resumed_from == 2 and resumed.epochs_completed == config.epochs


def test_disk_fault_during_persist_keeps_the_champion_and_earlier_files(run, monkeypatch):
    from tasks.promote_challenger import promote_challenger
    from tests.test_registry import summary
    from trainflow.paths import ArtifactPaths
    from trainflow.runs.registry import Registry

    config, data, paths = run
    promote_challenger(config, summary("champion", 0.9), tolerance=0.0)
    registry = Registry(ArtifactPaths.at(config.artifacts))
    champion_before = registry.champion_file.read_bytes()
    training = train_model(config, data, paths)
    weights = persist_weights(training, paths)
    weights_before = weights.read_bytes()
    with monkeypatch.context() as patch:
        DiskFault(patch, keras.Model, "save", 1, paths.model_dir, 1, errno.ENOSPC)
        with pytest.raises(StorageError, match="model.keras: No space left on device"):
            persist_model(training, weights, paths)
    assert not paths.keras_model.exists() and not list(paths.model_dir.glob("*.tmp-*"))
    assert weights.read_bytes() == weights_before
    assert registry.champion_file.read_bytes() == champion_before
    assert persist_model(training, weights, paths).keras_model.is_file()  # the disk is fixed


def test_a_diverging_loss_stops_training_at_once_and_nothing_is_persisted(run, monkeypatch):
    config, data, paths = run
    from trainflow.training import session as stage

    build_classifier = stage.build_classifier

    def diverged_model(*args):
        """A model whose output layer already holds a NaN, as after an exploding update."""
        model, contract = build_classifier(*args)
        kernel = model.layers[-1].kernel
        kernel.assign(np.where(np.eye(*kernel.shape, dtype=bool), np.nan, kernel.numpy()))
        return model, contract

    monkeypatch.setattr(stage, "build_classifier", diverged_model)
    with pytest.raises(NonFiniteLossError, match="the loss became nan in epoch 1; nothing was"):
        train_model(config, data, paths)
    assert load_latest_checkpoint(paths) is None
    assert not list(paths.best_checkpoints_dir.glob("*.h5"))
    assert not paths.training_result.exists() and not paths.weights.exists()


def test_persist_refuses_non_finite_weights(run):
    from trainflow.storage.digests import sha256_of_files
    from trainflow.training.models import build_model

    config, data, paths = run
    training = train_model(config, data, paths)
    model = build_model(training.recipe, training.image_shape, training.num_classes)
    model.set_weights([np.full_like(array, np.nan) for array in model.get_weights()])
    best = paths.storage.path(training.best_checkpoint)
    model.save_weights(best)
    changed = {"best_checkpoint_sha256": sha256_of_files([best])}
    with pytest.raises(NonFiniteLossError, match="NaN or infinite weights"):
        persist_weights(training.model_copy(update=changed), paths)
    assert not paths.weights.exists()


def test_a_keras_file_with_a_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input(shape=(4,))
    outputs = keras.layers.Lambda(lambda values: values * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(UnsafeModelError, match=f"{path} holds Python code .* safe mode"):
        load_saved_model(path)


@pytest.mark.parametrize(
    "exception",
    [
        OSError("connection reset"),
        RuntimeError("worker lost"),
        TimeoutError(),
        DownloadError("offline"),
    ],
)
def test_transient_errors_are_retried(exception):
    assert retry_if_transient(None, None, FailedState(exception)) is True


@pytest.mark.parametrize(
    "exception",
    [
        DataSourceError("bad"),
        StorageError("full"),
        NonFiniteLossError("nan"),
        RunInUseError("busy"),
    ],
)
def test_errors_retrying_cannot_fix_are_not_retried(exception):
    assert retry_if_transient(None, None, FailedState(exception)) is False


class FailedState:
    def __init__(self, exception: BaseException) -> None:
        self.exception = exception

    def result(self, raise_on_failure: bool = True):
        return self.exception


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port` (Linux: /proc/net/tcp[6])."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                addresses.add(address)
    return addresses


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net/tcp")
def test_the_local_prefect_server_listens_on_loopback_only(prefect_server):
    port = int(prefect_server.rsplit(":", 1)[1].split("/")[0])
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing else
