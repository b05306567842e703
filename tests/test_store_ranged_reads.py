"""Prepared data in a real S3-compatible store (moto's server on 127.0.0.1) is read where it lies:
a split's row groups come by ranged reads through `Storage`, its digest is checked as it streams,
and no split is ever downloaded whole, nor appears in the process's scratch. Whole downloads of a
split fail in these tests (`read_in_place`), so the old way of reading could not pass them."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from s3fs.core import S3File

from tasks.evaluate_model import evaluate_model
from tasks.persist_model import persist_model
from tasks.persist_weights import persist_weights
from tasks.prepare_data import prepare_data
from tasks.report_run import report_run
from tasks.train_model import train_model
from tests.s3_server import S3Server, s3_environment
from trainflow.config import RunConfig
from trainflow.data import split_writer
from trainflow.data.prepared import PreparedSplit
from trainflow.errors import StoreUnavailableError
from trainflow.paths import ArtifactPaths
from trainflow.storage import digests, mirror, ranged
from trainflow.storage.artifacts import Storage
from trainflow.storage.stores import ObjectStore

# 16 rows a row group: idx_dir's 280 training rows are 18 row groups.
GROUP_BYTES = 16 * 28 * 28
EPOCHS = 2


@pytest.fixture
def store_root(s3_store: S3Server, bucket: str):
    """This process pointed at the store, and an artifacts root in the test's bucket."""
    with s3_environment(s3_store):
        yield ArtifactPaths.at(f"s3://{bucket}/team")


@pytest.fixture
def read_in_place(monkeypatch) -> list[str]:
    """Fail every whole download of a split (the scratch mirror's way of reading); return the
    keys opened for ranged reads, in order."""

    def refused(download):
        def whole(store: ObjectStore, key: str, *rest):
            if key.endswith(".parquet"):
                raise AssertionError(f"the split {key} was downloaded whole")
            return download(store, key, *rest)

        return whole

    monkeypatch.setattr(ObjectStore, "get_file", refused(ObjectStore.get_file))
    monkeypatch.setattr(ObjectStore, "read_bytes", refused(ObjectStore.read_bytes))
    opened: list[str] = []
    open_object = mirror.open_object
    monkeypatch.setattr(
        mirror, "open_object", lambda store, key: opened.append(key) or open_object(store, key)
    )
    return opened


@pytest.fixture
def small_row_groups(monkeypatch) -> None:
    monkeypatch.setattr(split_writer, "PREPARED_ROW_GROUP_BYTES", GROUP_BYTES)


def config_at(idx_dir: Path, artifacts: str | Path) -> RunConfig:
    return RunConfig(
        dataset=f"idx:{idx_dir}",
        epochs=EPOCHS,
        patience=10,
        deterministic=True,
        data_input="stream",
        artifacts=artifacts,
        run_name="in-place",
    )


def run_stages(config: RunConfig):
    """Prepare (or reuse), train, persist, evaluate and report, as the training flow does."""
    root = ArtifactPaths.at(config.artifacts)
    data = prepare_data(config.source, config.preparation, root)
    paths = root.run(config.run_name)
    training = train_model(config, data, paths)
    persisted = persist_model(training, persist_weights(training, paths), paths)
    evaluation = evaluate_model(persisted, training, data, paths)
    report_run(training, evaluation, data, paths)
    return data, training, evaluation, paths


def prepared_elsewhere(config: RunConfig, root: ArtifactPaths):
    """Data prepared into the store as another machine would leave it: nothing of it local."""
    prepared = prepare_data(config.source, config.preparation, root)
    shutil.rmtree(root.root / "data")
    return prepared


@pytest.mark.usefixtures("small_row_groups")
def test_a_run_in_the_store_reads_its_data_in_place_and_ends_as_a_local_run(
    store_root: ArtifactPaths, read_in_place: list[str], s3_store, bucket, idx_dir, tmp_path
):
    config = config_at(idx_dir, store_root.location)
    prepared = prepared_elsewhere(config, store_root)
    data, training, evaluation, paths = run_stages(config)
    assert data.reused and data.fingerprint == prepared.fingerprint
    assert not list((store_root.root / "data").rglob("*.parquet"))  # in the scratch: never
    split_key = f"data/{data.fingerprint}/train.parquet"
    # Verified, its footer read, then read again in every epoch (streamed: a window at a time).
    assert read_in_place.count(split_key) >= 2 + EPOCHS

    _, local_training, local_evaluation, local_paths = run_stages(
        config_at(idx_dir, tmp_path / "local")
    )
    assert training.history == local_training.history
    assert (evaluation.accuracy, evaluation.loss) == (
        local_evaluation.accuracy,
        local_evaluation.loss,
    )
    weights = (
        s3_store.client()
        .get_object(Bucket=bucket, Key=f"team/{store_root.storage.key(paths.weights)}")["Body"]
        .read()
    )
    assert weights == local_paths.weights.read_bytes()


@pytest.mark.usefixtures("read_in_place")
def test_a_split_damaged_in_the_store_is_found_by_its_digest_and_prepared_again(
    store_root: ArtifactPaths, s3_store, bucket, idx_dir, caplog
):
    config = config_at(idx_dir, store_root.location)
    prepared = prepared_elsewhere(config, store_root)
    client, key = s3_store.client(), f"team/data/{prepared.fingerprint}/train.parquet"
    original = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    middle = len(original) // 2
    damaged = original[:middle] + bytes(255 - byte for byte in original[middle : middle + 64])
    client.put_object(Bucket=bucket, Key=key, Body=damaged + original[middle + 64 :])

    with caplog.at_level(logging.WARNING, logger="trainflow"):
        again = prepare_data(config.source, config.preparation, store_root)
    assert not again.reused and again.rows == prepared.rows
    assert f"Prepared data {prepared.paths.location} is damaged (train)" in caplog.text
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == original


@pytest.mark.usefixtures("read_in_place")
def test_a_fault_while_checking_a_split_is_retried_never_taken_for_damage(
    store_root: ArtifactPaths, idx_dir, monkeypatch, caplog
):
    config = config_at(idx_dir, store_root.location)
    prepared_elsewhere(config, store_root)
    monkeypatch.setattr(ranged, "READ_AHEAD_BYTES", 4096)  # many ranged reads a split
    monkeypatch.setattr(digests, "CHUNK_BYTES", 4096)
    monkeypatch.setattr("trainflow.storage.stores.time.sleep", lambda seconds: None)
    fetches: list[int] = []
    fetch_range = S3File._fetch_range

    def flaky(file: S3File, start: int, end: int) -> bytes:
        fetches.append(start)
        if len(fetches) in (2, 5):  # in the middle of a split, after bytes were read
            raise ConnectionResetError("connection reset by peer")
        return fetch_range(file, start, end)

    monkeypatch.setattr(S3File, "_fetch_range", flaky)
    with caplog.at_level(logging.WARNING, logger="trainflow"):
        again = prepare_data(config.source, config.preparation, store_root)
    assert again.reused  # each read made again from where it started: the digests match
    assert "damaged" not in caplog.text and "trying again" in caplog.text

    def down(file: S3File, start: int, end: int) -> bytes:
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(S3File, "_fetch_range", down)
    with pytest.raises(StoreUnavailableError, match="did not answer"):
        prepare_data(config.source, config.preparation, store_root)


@pytest.mark.usefixtures("small_row_groups", "read_in_place")
def test_a_split_read_in_place_gives_the_rows_of_its_local_copy(
    store_root: ArtifactPaths, s3_store, bucket, idx_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(ranged, "READ_AHEAD_BYTES", 4096)  # row groups across several requests
    prepared = prepared_elsewhere(config_at(idx_dir, store_root.location), store_root)
    prefix = f"team/data/{prepared.fingerprint}"
    copy = s3_store.download(bucket, prefix, tmp_path / "copy")
    in_store = PreparedSplit.of(prepared.paths, "train")
    local = PreparedSplit(copy / "train.parquet", Storage.at(copy))

    assert (in_store.group_rows, in_store.image_shape, in_store.pixel_dtype) == (
        local.group_rows,
        local.image_shape,
        local.pixel_dtype,
    )
    assert len(in_store.group_rows) == 18
    pairs = [
        (in_store.read(), local.read()),
        (in_store.row_groups([17, 3, 0]), local.row_groups([17, 3, 0])),
        *zip(in_store.batches(50), local.batches(50), strict=True),
    ]
    for (images, labels), (local_images, local_labels) in pairs:
        assert np.array_equal(images, local_images) and np.array_equal(labels, local_labels)
    assert np.array_equal(in_store.labels(), local.labels())
    rows = np.array([279, 5, 140, 6])
    assert np.array_equal(in_store.images_at(rows), local.images_at(rows))
    assert not list((store_root.root / "data").rglob("*.parquet"))

    # A directory being written again: its files are not read until its marker commits them.
    s3_store.client().put_object(
        Bucket=bucket, Key=f"{prefix}/.committed.json", Body=b'{"state": "writing"}'
    )
    with pytest.raises(FileNotFoundError, match="is not committed"):
        PreparedSplit.of(prepared.paths, "train")
