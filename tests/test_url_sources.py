"""Data sources at object-store URLs (`idx:s3://…`, `npz:s3://…`, `parquet:…`, `images:…`, any
fsspec URL), against a real S3 API: moto's server on 127.0.0.1. The same files prepare into the
same data, with the same fingerprint, whether they are read from a directory or from the store;
every problem is one error naming the URL."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from examples.datasets import write_rgb_image_folder
from tasks.prepare_data import prepare_data
from tests.conftest import synthetic_images, write_idx, write_idx_pair
from tests.test_cli import trainflow
from trainflow.data.parquet import IMAGE_COLUMN, IMAGE_SHAPE_METADATA_KEY, LABEL_COLUMN
from trainflow.data.prepared import read_split
from trainflow.data.sources import locate_source_files, source_sha256
from trainflow.datasets import DataSource, PreparationSpec
from trainflow.errors import DataSourceError, StoreError
from trainflow.paths import PREPARED_SPLITS, ArtifactPaths
from trainflow.storage.stores import ObjectStore

CLASS_NAMES = [f"digit-{label}" for label in range(10)]


@pytest.fixture(autouse=True)
def aws_environment(s3_store, monkeypatch) -> dict[str, str]:
    """The standard AWS variables, pointing at the module's S3 server (and nothing of the
    user's)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_store.environment.items():
        monkeypatch.setenv(name, value)
    return s3_store.environment


def upload(local: Path, url: str) -> None:
    """Put the file `local` at `url`, or every file under the directory `local` under it."""
    if local.is_file():
        parent, _, name = url.rpartition("/")
        ObjectStore(parent).put_file(local, name)
        return
    store = ObjectStore(url)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            store.put_file(path, path.relative_to(local).as_posix())


def prepare(spec: str, artifacts: Path, **preparation):
    return prepare_data(
        DataSource.parse(spec), PreparationSpec(**preparation), ArtifactPaths.at(artifacts)
    )


def assert_prepared_alike(local_spec: str, url_spec: str, tmp_path: Path, **preparation):
    """Prepare both sources into their own artifacts: the same data, told apart only by name."""
    local = prepare(local_spec, tmp_path / "from-directory", **preparation)
    remote = prepare(url_spec, tmp_path / "from-store", **preparation)
    assert remote.source == url_spec
    assert (remote.source_sha256, remote.fingerprint) == (local.source_sha256, local.fingerprint)
    assert (remote.class_names, remote.rows, remote.image_shape) == (
        local.class_names,
        local.rows,
        local.image_shape,
    )
    for name in PREPARED_SPLITS:
        for ours, theirs in zip(
            read_split(remote.paths.split(name)), read_split(local.paths.split(name)), strict=True
        ):
            np.testing.assert_array_equal(ours, theirs)
    assert json.loads(remote.paths.manifest.read_text())["source"] == url_spec
    return remote


def write_parquet_source(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, count, seed in (("train", 200, 5), ("test", 60, 6)):
        images, labels = synthetic_images(count, seed=seed)
        table = pa.table(
            {
                IMAGE_COLUMN: pa.array(
                    images.reshape(count, -1).tolist(), pa.list_(pa.uint8(), 784)
                ),
                LABEL_COLUMN: pa.array(labels.tolist(), pa.int64()),
            }
        ).replace_schema_metadata({IMAGE_SHAPE_METADATA_KEY: b"28,28"})
        pq.write_table(table, directory / f"{name}.parquet")
    return directory


def test_an_idx_prefix_prepares_like_the_same_files_in_a_directory(tmp_path, bucket):
    source = tmp_path / "idx"
    write_idx_pair(source, "train", *synthetic_images(300, seed=1))
    write_idx_pair(source, "t10k", *synthetic_images(100, seed=2))
    (source / "classes.json").write_text(json.dumps(CLASS_NAMES))
    (source / "notes.txt").write_text("not data: left alone, here and there")
    upload(source, f"s3://{bucket}/datasets/idx")
    prepared = assert_prepared_alike(f"idx:{source}", f"idx:s3://{bucket}/datasets/idx", tmp_path)
    assert prepared.class_names == CLASS_NAMES


def test_an_npz_object_prepares_like_the_file(tmp_path, bucket, npz_file):
    (npz_file.parent / "classes.json").write_text(json.dumps(CLASS_NAMES))
    upload(npz_file, f"s3://{bucket}/npz/data.npz")
    upload(npz_file.parent / "classes.json", f"s3://{bucket}/npz/classes.json")
    prepared = assert_prepared_alike(f"npz:{npz_file}", f"npz:s3://{bucket}/npz/data.npz", tmp_path)
    assert prepared.class_names == CLASS_NAMES


def test_a_parquet_prefix_prepares_like_the_directory(tmp_path, bucket):
    source = write_parquet_source(tmp_path / "parquet")
    upload(source, f"s3://{bucket}/parquet")
    assert_prepared_alike(f"parquet:{source}", f"parquet:s3://{bucket}/parquet/", tmp_path)


def test_an_image_folder_prefix_prepares_like_the_folder(tmp_path, bucket):
    source = write_rgb_image_folder(tmp_path / "pets", per_class=10)
    upload(source, f"s3://{bucket}/pets")
    prepared = assert_prepared_alike(
        f"images:{source}", f"images:s3://{bucket}/pets", tmp_path, image_size=(8, 8)
    )
    assert prepared.class_names == ["blue", "green", "red"]


def test_any_fsspec_url_is_a_source(tmp_path, idx_dir):
    upload(idx_dir, "memory://trainflow-tests/idx")
    try:
        assert_prepared_alike(f"idx:{idx_dir}", "idx:memory://trainflow-tests/idx", tmp_path)
    finally:
        ObjectStore("memory://trainflow-tests").remove("")


def test_a_url_stays_a_url_and_is_read_from_a_local_copy():
    source = DataSource.parse("idx:s3://bucket/some/prefix")
    assert (source.url, str(source)) == ("s3://bucket/some/prefix", "idx:s3://bucket/some/prefix")
    assert Path(tempfile.gettempdir()) in source.location.parents
    assert "s3:" not in str(source.location)
    assert DataSource.model_validate(source.model_dump()) == source
    npz = DataSource.parse("npz:s3://bucket/a/data.npz")
    assert npz.location.name == "data.npz" and npz.location.parent != source.location
    assert DataSource.parse("idx:file:///data/mnist").location == Path("/data/mnist")


def test_a_changed_store_is_read_again_and_an_unchanged_one_is_not(tmp_path, bucket):
    url = f"s3://{bucket}/idx"
    first, second = tmp_path / "first", tmp_path / "second"
    write_idx_pair(first, "t10k", *synthetic_images(40, seed=1))
    (first / "classes.json").write_text(json.dumps(CLASS_NAMES))
    write_idx_pair(second, "t10k", *synthetic_images(40, seed=2))
    source = DataSource.parse(f"idx:{url}")
    upload(first, url)
    locate_source_files(source)
    copies = sorted(path.stat().st_ino for path in source.location.iterdir())
    # Located again, unchanged in the store: the same copies, not downloaded again.
    assert source_sha256(source, locate_source_files(source)) == digest_of(f"idx:{first}")
    assert sorted(path.stat().st_ino for path in source.location.iterdir()) == sorted(copies)
    ObjectStore(url).remove("classes.json")
    upload(second, url)
    files = locate_source_files(source)
    assert not (source.location / "classes.json").exists()
    assert source_sha256(source, files) == digest_of(f"idx:{second}")


def digest_of(spec: str) -> str:
    source = DataSource.parse(spec)
    return source_sha256(source, locate_source_files(source))


def test_a_missing_prefix_is_one_error_naming_the_url(tmp_path, bucket):
    url = f"s3://{bucket}/nowhere"
    with pytest.raises(DataSourceError, match=f"^idx:{url}: no objects under {url}"):
        prepare(f"idx:{url}", tmp_path / "artifacts")
    with pytest.raises(DataSourceError, match=f"^npz:{url}/data.npz: no such object"):
        prepare(f"npz:{url}/data.npz", tmp_path / "artifacts")


def test_a_missing_bucket_is_the_stores_one_line_error(tmp_path, aws_environment):
    with pytest.raises(StoreError, match="bucket 'no-such-bucket' does not exist") as raised:
        prepare("idx:s3://no-such-bucket/idx", tmp_path / "artifacts")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"notes.txt": b"hello"}, "^idx:{url} holds no recognisable files"),
        (
            {"t10k-images-idx3-ubyte": b"\x00\x00\x09\x01", "t10k-labels-idx1-ubyte.gz": None},
            "^{url}/t10k-images-idx3-ubyte: not an IDX",
        ),
        ({"t10k-images-idx3-ubyte.gz": None}, "^{url}: t10k has no labels IDX file"),
    ],
    ids=["no-idx-files", "damaged", "unpaired"],
)
def test_bad_data_is_named_by_its_url(tmp_path, bucket, files, message):
    url = f"s3://{bucket}/bad"
    directory = tmp_path / "bad"
    directory.mkdir()
    for name, content in files.items():
        if content is None:  # a valid IDX file of images or of labels
            write_idx(directory / name, synthetic_images(5, seed=1)["labels" in name])
        else:
            (directory / name).write_bytes(content)
    upload(directory, url)
    with pytest.raises(DataSourceError, match=message.format(url=url)) as raised:
        prepare(f"idx:{url}", tmp_path / "artifacts")
    assert tempfile.gettempdir() not in str(raised.value)


def test_an_image_folder_error_names_the_url(tmp_path, bucket):
    source = write_rgb_image_folder(tmp_path / "pets", per_class=2)
    (source / "red" / "broken.png").write_bytes(b"not a png")
    upload(source, f"s3://{bucket}/pets")
    with pytest.raises(
        DataSourceError, match=f"^s3://{bucket}/pets/red/broken.png: not a readable"
    ):
        prepare(f"images:s3://{bucket}/pets", tmp_path / "artifacts")


def test_trainflow_run_trains_on_an_idx_prefix(
    tmp_path, idx_dir, bucket, aws_environment, cli_environment
):
    upload(idx_dir, f"s3://{bucket}/idx")
    artifacts = tmp_path / "artifacts"
    completed = trainflow(
        "run",
        "--dataset",
        f"idx:s3://{bucket}/idx",
        "--epochs",
        "1",
        "--artifacts",
        artifacts,
        "--json",
        env={**cli_environment, **aws_environment},
    )
    summary = json.loads(completed.stdout)
    assert summary["epochs_completed"] == 1
    [manifest] = artifacts.glob("data/*/manifest.json")
    assert json.loads(manifest.read_text())["source"] == f"idx:s3://{bucket}/idx"


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("{bucket}/nowhere", "idx:s3://{bucket}/nowhere: no objects under s3://{bucket}/nowhere"),
        ("no-such-bucket/idx", "store s3://no-such-bucket/idx: bucket 'no-such-bucket' does not"),
    ],
    ids=["prefix", "bucket"],
)
def test_cli_names_a_missing_prefix_or_bucket(
    tmp_path, bucket, aws_environment, cli_environment, location, message
):
    completed = trainflow(
        "run",
        "--dataset",
        f"idx:s3://{location.format(bucket=bucket)}",
        "--artifacts",
        tmp_path / "artifacts",
        env={**cli_environment, **aws_environment},
        check_status=2,
    )
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(bucket=bucket) in lines[0], lines
    assert "Traceback" not in completed.stderr
