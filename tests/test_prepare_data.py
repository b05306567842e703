import json
import logging

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.prepare_data import prepare_data
from trainflow.data.prepared import read_split
from trainflow.datasets import DataSource, PreparationSpec
from trainflow.errors import DataSourceError
from trainflow.paths import ArtifactPaths
from trainflow.storage.digests import sha256_of_files


def prepare(spec, artifacts, **split):
    return prepare_data(
        DataSource.parse(spec), PreparationSpec(**split), ArtifactPaths.at(artifacts)
    )


def test_prepare_writes_parquet_splits_and_a_manifest(idx_dir, artifacts):
    prepared = prepare(f"idx:{idx_dir}", artifacts)
    assert prepared.rows == {"train": 280, "validation": 40, "test": 80}
    assert prepared.image_shape == (28, 28) and not prepared.reused
    manifest = json.loads(prepared.paths.manifest.read_text())
    assert manifest["source_sha256"] == sha256_of_files(sorted(idx_dir.iterdir()))
    assert manifest["splits"]["test"]["class_counts"] == [8] * 10
    for name in ("train", "validation", "test"):
        path = prepared.paths.split(name)
        assert pq.read_schema(path).names == ["image", "label"]
        assert manifest["splits"][name]["sha256"] == sha256_of_files([path])
    images, labels = read_split(prepared.paths.split("train"))
    assert images.dtype == np.float32 and 0 <= images.min() and images.max() == 1
    assert len(labels) == 280


def test_second_run_reuses_prepared_data_and_says_so(idx_dir, artifacts, caplog):
    first = prepare(f"idx:{idx_dir}", artifacts)
    mtime = first.paths.split("train").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="trainflow"):
        second = prepare(f"idx:{idx_dir}", artifacts)
    assert second.reused and second.paths == first.paths
    assert second.paths.split("train").stat().st_mtime_ns == mtime
    assert "Reusing prepared data" in caplog.text


def test_other_split_parameters_prepare_other_data(idx_dir, artifacts):
    first = prepare(f"idx:{idx_dir}", artifacts, seed=1)
    other = prepare(f"idx:{idx_dir}", artifacts, seed=2)
    assert other.fingerprint != first.fingerprint and not other.reused


def test_damaged_prepared_split_is_prepared_again(idx_dir, artifacts):
    first = prepare(f"idx:{idx_dir}", artifacts)
    first.paths.split("test").write_bytes(b"garbage")
    again = prepare(f"idx:{idx_dir}", artifacts)
    assert not again.reused
    assert len(read_split(again.paths.split("test"))[1]) == 80


def test_prepared_directory_is_itself_a_parquet_source(npz_file, artifacts, tmp_path):
    prepared = prepare(f"npz:{npz_file}", artifacts)
    assert prepared.rows == {"train": 270, "validation": 30, "test": 100}
    again = prepare(f"parquet:{prepared.paths.root}", tmp_path / "elsewhere")
    assert again.rows == prepared.rows
    for name in ("train", "validation", "test"):
        for ours, theirs in zip(
            read_split(prepared.paths.split(name)), read_split(again.paths.split(name))
        ):
            np.testing.assert_array_equal(ours, theirs)


def test_bad_source_leaves_earlier_prepared_data_alone(idx_dir, artifacts, tmp_path):
    good = prepare(f"idx:{idx_dir}", artifacts)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError):
        prepare(f"idx:{tmp_path / 'empty'}", artifacts)
    assert prepare(f"idx:{idx_dir}", artifacts).reused
    assert sorted(path.name for path in (artifacts / "data").iterdir()) == [good.fingerprint]
