"""A passing fault is not damage: an I/O error while reading a checkpoint manifest, a run record or
prepared data is raised (and retried), never taken for corruption, and never leads to deleting
anything; only verifiably damaged files (a bad hash, unparsable content) are set aside or redone.
A failed download is retried, then reported in one line."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from prefect import flow

from tasks.persist_model import persist_model
from tasks.persist_weights import persist_weights
from tasks.prepare_data import prepare_data, prepare_data_task
from tasks.train_model import train_model
from tests.conftest import synthetic_images
from trainflow.checkpoints.store import load_latest_checkpoint
from trainflow.config import RunConfig
from trainflow.data.preparation import verified_prepared_data
from trainflow.datasets import DataSource, PreparationSpec
from trainflow.errors import DownloadError, RunStateError
from trainflow.paths import ArtifactPaths
from trainflow.runs.lock import unlock_run
from trainflow.runs.records import close_run, list_runs, open_run, read_record
from trainflow.training.models import build_model


class ReadFault:
    """Make reading any file under `directory` (whole, or opened for reading) fail with EIO, as a
    flaky disk or network file system does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
        self.directory = str(directory)
        for method in ("read_bytes", "read_text", "open"):
            monkeypatch.setattr(Path, method, self._failing(getattr(Path, method)))

    def _failing(self, original):
        def read(path: Path, *args, **kwargs):
            mode = args[0] if args else kwargs.get("mode", "r")
            if str(path).startswith(self.directory) and "r" in mode and "+" not in mode:
                raise OSError(errno.EIO, "Input/output error", str(path))
            return original(path, *args, **kwargs)

        return read


def test_an_io_error_reading_checkpoints_is_raised_and_deletes_nothing(run, monkeypatch):
    config, data, paths = run
    training = train_model(config, data, paths)
    persist_model(training, persist_weights(training, paths), paths)
    files_before = sorted(paths.run_dir.rglob("*"))
    with monkeypatch.context() as patch:
        ReadFault(patch, paths.resume_dir)
        with pytest.raises(OSError, match="Input/output error"):
            train_model(config, data, paths)
    assert sorted(paths.run_dir.rglob("*")) == files_before  # nothing moved, nothing deleted
    assert not paths.quarantine_dir.exists()
    again = train_model(config, data, paths)  # the retry, once the disk answers again
    assert again.resumed_from == config.epochs
    assert again.best_checkpoint == training.best_checkpoint


def test_a_garbled_manifest_is_damage_and_is_set_aside(run):
    config, data, paths = run
    train_model(config, data, paths)
    newest = sorted(paths.resume_dir.glob("step-*.json"))[-1]
    newest.write_text("{not json")
    state = load_latest_checkpoint(paths)
    assert (paths.quarantine_dir / newest.name).exists()
    assert state.global_step < int(newest.name[5:14])


def test_an_io_error_reading_the_run_record_is_raised_not_taken_for_no_record(
    tmp_path, monkeypatch
):
    config = RunConfig(artifacts=tmp_path / "artifacts", run_name="kept", fresh=True)
    paths = open_run(config, "kept", flow_run_id="first")
    (paths.run_dir / "progress.txt").write_text("work of the first flow run")
    close_run(paths, epochs_completed=1)
    with monkeypatch.context() as patch:
        ReadFault(patch, paths.record)
        with pytest.raises(OSError, match="Input/output error"):
            read_record(paths)
        with pytest.raises(OSError):
            open_run(config, "kept", flow_run_id="second")  # --fresh must not wipe on a fault
    unlock_run(paths)
    assert (paths.run_dir / "progress.txt").is_file()
    assert read_record(paths).status == "completed"


def test_a_damaged_run_record_is_an_error_naming_it_and_is_listed(tmp_path):
    config = RunConfig(artifacts=tmp_path / "artifacts", run_name="broken")
    paths = open_run(config, "broken", flow_run_id=None)
    close_run(paths, epochs_completed=1)
    paths.record.write_bytes(b'{"run_name": "broken", "status": ')
    with pytest.raises(RunStateError, match=f"{paths.record} is damaged .*another --run-name"):
        read_record(paths)
    with pytest.raises(RunStateError):
        open_run(config, "broken", flow_run_id=None)
    unlock_run(paths)
    (listed,) = list_runs(ArtifactPaths.at(config.artifacts))
    assert (listed.run_name, listed.status) == ("broken", "damaged")
    assert "is damaged" in listed.error


def test_checking_prepared_data_deletes_nothing_and_damage_is_prepared_again(idx_dir, artifacts):
    source, split = DataSource.parse(f"idx:{idx_dir}"), PreparationSpec()
    prepared = prepare_data(source, split, ArtifactPaths.at(artifacts))
    prepared.paths.manifest.write_text("{garbled")
    assert verified_prepared_data(prepared.paths) is None
    assert prepared.paths.split("train").is_file()  # the check only checks
    again = prepare_data(source, split, ArtifactPaths.at(artifacts))
    assert not again.reused and again.rows == prepared.rows
    assert json.loads(again.paths.manifest.read_text())["fingerprint"] == prepared.fingerprint


def test_an_io_error_reading_prepared_data_is_raised(idx_dir, artifacts, monkeypatch):
    source, split = DataSource.parse(f"idx:{idx_dir}"), PreparationSpec()
    prepared = prepare_data(source, split, ArtifactPaths.at(artifacts))
    with monkeypatch.context() as patch:
        ReadFault(patch, prepared.paths.root)
        with pytest.raises(OSError, match="Input/output error"):
            verified_prepared_data(prepared.paths)
    assert verified_prepared_data(prepared.paths) is not None


def test_an_unknown_model_kind_is_refused():
    with pytest.raises(
        ValueError, match="model 'resnet' is not one of mlp, cnn, or MODULE:FUNCTION"
    ):
        build_model("resnet", (28, 28), 10)


class FlakyDownload:
    """`keras.datasets.mnist.load_data` that fails `failures` times as an offline machine does,
    then returns small MNIST-shaped data."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise Exception("URL fetch failure on https://storage.googleapis.com/mnist.npz")
        train, test = synthetic_images(400, seed=1), synthetic_images(100, seed=2)
        return tuple((images, labels.astype(np.uint8)) for images, labels in (train, test))


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(("failures", "succeeds"), [(2, True), (5, False)])
def test_a_failed_download_is_retried_then_reported_in_one_line(
    failures, succeeds, artifacts, monkeypatch
):
    import keras

    download = FlakyDownload(failures)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", download)

    @flow
    def prepare_mnist():
        return prepare_data_task(
            DataSource.parse("mnist"), PreparationSpec(), ArtifactPaths.at(artifacts)
        )

    if succeeds:
        assert prepare_mnist().rows["test"] == 100
    else:
        with pytest.raises(DownloadError, match="could not download mnist .*use a local copy"):
            prepare_mnist()
    assert download.calls == 3  # the first attempt and prepare_data's two retries
