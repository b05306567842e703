"""The storage layer on a real S3-compatible server, without Prefect, through its one interface
(`Storage`, as `paths.storage`): the same calls on a local directory and on a store, URLs stay
URLs, committed files reach the store, checkpoints commit manifest last and retention deletes only older ones, a
damaged checkpoint in the store is set aside there, and faults are sorted from damage."""

from __future__ import annotations

import errno
import json
import shutil

import pytest

from tests.s3_server import S3Server
from trainflow.checkpoints.state import ResumeState
from trainflow.checkpoints.store import checkpoint_files, load_latest_checkpoint
from trainflow.checkpoints.writer import write_checkpoint
from trainflow.config import RunConfig
from trainflow.errors import StoreError
from trainflow.paths import ArtifactPaths
from trainflow.storage.faults import is_transient
from trainflow.storage.stores import ObjectStore


@pytest.fixture
def in_store(s3_store: S3Server, bucket: str, monkeypatch) -> ArtifactPaths:
    """This process's environment pointed at the store, and an artifacts root in its bucket."""
    for key, value in s3_store.environment.items():
        monkeypatch.setenv(key, value)
    return ArtifactPaths.at(f"s3://{bucket}/team")


def state_at(step: int) -> ResumeState:
    return ResumeState(
        model_kind="mlp", data_fingerprint="f", seed=0, batch_size=32, global_step=step
    )


def test_a_url_never_becomes_a_local_path(in_store: ArtifactPaths, bucket: str):
    config = RunConfig(artifacts=f"s3://{bucket}/team")
    assert config.artifacts == f"s3://{bucket}/team"
    assert "s3:" not in in_store.root.as_posix()
    assert in_store.location == f"s3://{bucket}/team"
    assert in_store.run("r").location == f"s3://{bucket}/team/runs/r"
    assert ArtifactPaths.at(f"s3://{bucket}/team") == in_store  # one mirror a process


def test_committed_files_reach_the_store_and_come_back(
    in_store: ArtifactPaths, s3_store: S3Server, bucket: str
):
    paths = in_store.run("r")
    paths.storage.write_json(paths.record, {"status": "running"})
    assert s3_store.keys(bucket, "team/runs/r/") == ["team/runs/r/run.json"]
    shutil.rmtree(paths.run_dir)  # nothing local, as on another machine
    assert json.loads(paths.storage.local_copy(paths.record).read_text()) == {"status": "running"}
    assert paths.storage.location(paths.record) == f"s3://{bucket}/team/runs/r/run.json"
    assert paths.storage.key(paths.record) == "runs/r/run.json"


@pytest.mark.parametrize("where", ["directory", "store"])
def test_the_same_calls_work_on_a_directory_and_on_a_store(
    where, in_store: ArtifactPaths, s3_store: S3Server, bucket: str, tmp_path
):
    artifacts = in_store if where == "store" else ArtifactPaths.at(tmp_path / "artifacts")
    storage, paths = artifacts.storage, artifacts.run("same")
    assert storage.is_remote == (where == "store")
    with storage.writing(paths.saved_model) as temporary:
        (temporary / "variables").mkdir(parents=True)
        (temporary / "variables" / "variables.index").write_bytes(b"index")
        (temporary / "saved_model.pb").write_bytes(b"graph")
    storage.write_bytes(paths.learning_curves_image, b"png")
    storage.write_json(paths.record, {"status": "running"})
    storage.move(paths.record, paths.run_dir / "moved.json")
    storage.remove(paths.learning_curves_image)
    if where == "store":  # another machine sees the same, from the store alone
        shutil.rmtree(paths.run_dir)
        storage.refresh(paths.run_dir)
        assert s3_store.keys(bucket, "team/runs/same/model/saved_model/") == [
            "team/runs/same/model/saved_model/.committed.json",
            "team/runs/same/model/saved_model/saved_model.pb",
            "team/runs/same/model/saved_model/variables/variables.index",
        ]
    files = sorted(p.relative_to(paths.run_dir).as_posix() for p in paths.run_dir.rglob("*.*"))
    assert files == [
        "model/saved_model/saved_model.pb",
        "model/saved_model/variables/variables.index",
        "moved.json",
    ]
    assert json.loads(storage.local_copy(paths.run_dir / "moved.json").read_text()) == {
        "status": "running"
    }
    assert not storage.local_copy(paths.record).exists()
    expected = f"s3://{bucket}/team/runs/same" if where == "store" else str(paths.run_dir)
    assert storage.location(paths.run_dir) == expected
    assert storage.key(paths.saved_model) == "runs/same/model/saved_model"


def test_retention_deletes_only_checkpoints_older_than_a_newer_commit(
    in_store: ArtifactPaths, s3_store: S3Server, bucket: str
):
    paths = in_store.run("r")
    for step in (10, 20, 30):
        write_checkpoint(b"weights of step %d" % step, paths, state_at(step), keep=2)
    assert s3_store.keys(bucket, "team/runs/r/checkpoints/resume/") == [
        f"team/runs/r/checkpoints/resume/step-0000000{step}.{suffix}"
        for step in (20, 30)
        for suffix in ("json", "weights.h5")
    ]


def test_retention_uncommits_an_old_checkpoint_only_after_a_newer_one_committed(
    in_store: ArtifactPaths, monkeypatch
):
    """In the store, in order: the new weights, the new manifest (the commit), then the oldest
    manifest (uncommitting it), and only then the oldest weights."""
    writes: list[tuple[str, str]] = []
    put_file, put_bytes, remove = ObjectStore.put_file, ObjectStore.put_bytes, ObjectStore.remove
    monkeypatch.setattr(
        ObjectStore,
        "put_file",
        lambda self, local, key: (writes.append(("put", key)), put_file(self, local, key))[1],
    )
    monkeypatch.setattr(
        ObjectStore,
        "put_bytes",
        lambda self, data, key: (writes.append(("put", key)), put_bytes(self, data, key))[1],
    )
    monkeypatch.setattr(
        ObjectStore,
        "remove",
        lambda self, key, tree=True: (writes.append(("remove", key)), remove(self, key, tree))[1],
    )
    paths = in_store.run("r")
    for step in (10, 20):
        write_checkpoint(b"weights of step %d" % step, paths, state_at(step), keep=1)
    resume = "runs/r/checkpoints/resume"
    assert writes == [
        ("put", f"{resume}/step-000000010.weights.h5"),
        ("put", f"{resume}/step-000000010.json"),
        ("put", f"{resume}/step-000000020.weights.h5"),
        ("put", f"{resume}/step-000000020.json"),
        ("remove", f"{resume}/step-000000010.json"),
        ("remove", f"{resume}/step-000000010.weights.h5"),
    ]


def test_checkpoint_weights_go_from_memory_to_the_store_and_are_read_back_from_it(
    in_store: ArtifactPaths, s3_store: S3Server, bucket: str
):
    paths = in_store.run("m")
    committed = write_checkpoint(b"weights of step 10", paths, state_at(10), keep=2)
    weights, _ = checkpoint_files(paths.resume_dir, 10)
    assert not weights.exists()  # no scratch copy written, then uploaded
    key = f"team/runs/m/checkpoints/resume/{weights.name}"
    assert s3_store.client().get_object(Bucket=bucket, Key=key)["Body"].read() == (
        b"weights of step 10"
    )
    assert load_latest_checkpoint(paths) == committed


def test_a_directory_is_read_only_as_its_commit_marker_lists_it(
    in_store: ArtifactPaths, s3_store: S3Server, bucket: str
):
    paths = in_store.run("d")
    model = paths.saved_model
    with paths.storage.writing(model) as temporary:
        (temporary / "variables").mkdir(parents=True)
        (temporary / "saved_model.pb").write_bytes(b"version 1")
        (temporary / "variables" / "variables.index").write_bytes(b"index 1")
    client = s3_store.client()
    prefix = "team/runs/d/model/saved_model"

    def marker() -> dict:
        return json.loads(
            client.get_object(Bucket=bucket, Key=f"{prefix}/.committed.json")["Body"].read()
        )

    assert marker() == {
        "state": "committed",
        "files": ["saved_model.pb", "variables/variables.index"],
    }

    # Another machine is part way through writing a new version: the marker says so first.
    client.put_object(Bucket=bucket, Key=f"{prefix}/.committed.json", Body=b'{"state": "writing"}')
    client.put_object(Bucket=bucket, Key=f"{prefix}/saved_model.pb", Body=b"version 2")
    shutil.rmtree(model)  # this machine has nothing of it
    paths.storage.refresh(paths.run_dir)
    assert not model.exists()  # not a part of a directory, not a mix of two versions

    # Committed, listing one file: a key it does not list (left by the older version) is not read.
    client.put_object(
        Bucket=bucket,
        Key=f"{prefix}/.committed.json",
        Body=json.dumps({"state": "committed", "files": ["saved_model.pb"]}).encode(),
    )
    paths.storage.refresh(paths.run_dir)
    assert (model / "saved_model.pb").read_bytes() == b"version 2"
    assert not (model / "variables").exists() and not (model / ".committed.json").exists()


def test_a_damaged_checkpoint_in_the_store_is_set_aside_there_and_the_one_before_is_used(
    in_store: ArtifactPaths, s3_store: S3Server, bucket: str
):
    paths = in_store.run("r")
    for step in (10, 20):
        write_checkpoint(b"weights of step %d" % step, paths, state_at(step), keep=3)
    prefix = "team/runs/r/checkpoints/"
    s3_store.client().put_object(
        Bucket=bucket, Key=f"{prefix}resume/step-000000020.weights.h5", Body=b"garbled"
    )
    shutil.rmtree(paths.run_dir)  # another machine: all it knows is in the store
    paths.storage.refresh(paths.run_dir)
    state = load_latest_checkpoint(paths)
    assert state is not None and state.global_step == 10
    keys = s3_store.keys(bucket, prefix)
    assert f"{prefix}quarantine/step-000000020.weights.h5" in keys
    assert f"{prefix}resume/step-000000020.weights.h5" not in keys
    assert f"{prefix}resume/step-000000010.weights.h5" in keys


def test_faults_are_retried_and_never_taken_for_missing_or_damaged_content():
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient(ConnectionResetError())
    assert is_transient(OSError(errno.EBUSY, "SlowDown"))  # s3fs's 503 / throttling
    assert is_transient(OSError(errno.EIO, "InternalError"))  # s3fs's 500
    assert not is_transient(FileNotFoundError("no such key"))
    assert not is_transient(PermissionError("AccessDenied"))
    assert not is_transient(OSError(errno.EINVAL, "precondition failed"))


def test_a_store_that_answers_again_after_a_fault_is_used(s3_store: S3Server, bucket, monkeypatch):
    for key, value in s3_store.environment.items():
        monkeypatch.setenv(key, value)
    store = ObjectStore(f"s3://{bucket}/team")
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionResetError("connection reset by peer")
        return "answered"

    monkeypatch.setattr("trainflow.storage.stores.time.sleep", lambda seconds: None)
    assert store.call(flaky, "read a key") == "answered"
    assert len(attempts) == 3


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(StoreError) as refused:
        ObjectStore("s3://key:secret@bucket/prefix")
    assert "secret" not in str(refused.value)


def test_a_training_result_written_with_a_local_path_names_its_best_checkpoint_by_key():
    """`training.json` of a run made before results named files by key: the path of the machine
    that wrote it becomes the key every machine shares."""
    from trainflow.results import TrainingResult

    written = {
        "model_kind": "mlp",
        "image_shape": [28, 28],
        "num_classes": 10,
        "data_fingerprint": "f",
        "epochs_completed": 2,
        "resumed_from": None,
        "resumed_from_step": None,
        "stopped_early": False,
        "best_epoch": 2,
        "best_checkpoint": "/tmp/trainflow-scratch-7-x/0123/runs/r/checkpoints/best/s_02.weights.h5",
        "best_checkpoint_sha256": "0" * 64,
        "optimizer_iterations": 20,
        "history": {},
        "steps_per_epoch": 10,
        "resumes": [],
    }
    result = TrainingResult.model_validate(written)
    assert result.best_checkpoint == "runs/r/checkpoints/best/s_02.weights.h5"
    assert result.recipe.model == "mlp" and result.class_names[0] == "0"
