"""Property-based fuzzing of every data reader: random bytes and random shapes give a valid dataset
or a `DataSourceError` naming the problem, never an exception of another kind."""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainflow.config import DataSource, SplitSpec
from trainflow.data.sources import locate_source_files, read_source
from trainflow.data.splitting import split_dataset
from trainflow.errors import DataSourceError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_and_split(source: str) -> None:
    """Read and validate like prepare_data: a clean result or a DataSourceError, nothing else."""
    parsed = DataSource.parse(source)
    try:
        splits = split_dataset(read_source(parsed, locate_source_files(parsed)), SplitSpec())
    except DataSourceError as error:
        assert str(error), "a DataSourceError must say what is wrong"
        return
    for images, labels in splits.values():
        assert images.dtype == np.float32 and labels.dtype == np.int64
        assert len(images) == len(labels) > 0
        assert np.isfinite(images).all() and 0 <= images.min() <= images.max() <= 1


def idx_bytes(type_code: int, shape: list[int], payload: bytes) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


@FUZZ
@given(images=st.binary(max_size=400), labels=st.binary(max_size=200), compress=st.booleans())
def test_idx_reader_on_random_bytes(images, labels, compress):
    with tempfile.TemporaryDirectory() as directory:
        suffix = ".gz" if compress else ""
        for role, content in (("images-idx3", images), ("labels-idx1", labels)):
            path = Path(directory) / f"t10k-{role}-ubyte{suffix}"
            path.write_bytes(gzip.compress(content) if compress else content)
        read_and_split(f"idx:{directory}")


@FUZZ
@given(
    type_code=st.sampled_from([0x08, 0x08, 0x09, 0x0D]),
    image_shape=st.lists(st.integers(0, 12), min_size=0, max_size=4),
    label_count=st.integers(0, 40),
    label_values=st.binary(min_size=0, max_size=40),
    extra=st.integers(-3, 3),
)
def test_idx_reader_on_random_shapes(type_code, image_shape, label_count, label_values, extra):
    count = int(np.prod(image_shape)) if image_shape else 0
    payload = bytes((index * 37) % 256 for index in range(max(0, count + extra)))
    labels = (label_values * 40)[:label_count] if label_values else bytes(label_count)
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "t10k-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(type_code, image_shape, payload))
        )
        (root / "t10k-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(0x08, [label_count], labels))
        )
        read_and_split(f"idx:{root}")


ARRAYS = st.sampled_from(["uint8", "int64", "float32", "float64", "bool", "U3"]).flatmap(
    lambda dtype: st.lists(st.integers(0, 6), min_size=0, max_size=4).map(
        lambda shape: (
            np.arange(int(np.prod(shape)) if shape else 1).reshape(shape or ()).astype(dtype)
        )
    )
)


@FUZZ
@given(
    arrays=st.dictionaries(
        st.sampled_from(["x_train", "y_train", "x_test", "y_test", "other"]), ARRAYS, max_size=5
    )
)
def test_npz_reader_on_random_arrays(arrays):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.npz"
        np.savez(path, **arrays)
        read_and_split(f"npz:{path}")


@FUZZ
@given(content=st.binary(max_size=600))
def test_npz_reader_on_random_bytes(content):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.npz"
        path.write_bytes(content)
        read_and_split(f"npz:{path}")


COLUMNS = st.sampled_from(
    [
        pa.array([1, 2, 3]),
        pa.array(["a", "b", "c"]),
        pa.array([0.5, float("nan"), 2.0]),
        pa.array([[1, 2], [3], []]),
        pa.FixedSizeListArray.from_arrays(pa.array(np.arange(12, dtype=np.uint8)), 4),
        pa.FixedSizeListArray.from_arrays(pa.array(np.linspace(0, 1, 12)), 4),
        pa.array([None, 1, 2]),
    ]
)


@FUZZ
@given(
    columns=st.dictionaries(st.sampled_from(["image", "label", "extra"]), COLUMNS, max_size=3),
    garbage=st.one_of(st.none(), st.binary(max_size=300)),
)
def test_parquet_reader_on_random_tables_and_bytes(columns, garbage):
    with tempfile.TemporaryDirectory() as directory:
        for split in ("train", "test"):
            path = Path(directory) / f"{split}.parquet"
            if garbage is not None and split == "test":
                path.write_bytes(garbage)
            else:
                buffer = io.BytesIO()
                pq.write_table(pa.table(columns or {"x": pa.array([1])}), buffer)
                path.write_bytes(buffer.getvalue())
        read_and_split(f"parquet:{directory}")
