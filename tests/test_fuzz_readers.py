"""Property-based fuzzing of every data reader: random bytes and random shapes give a valid dataset
or a `DataSourceError` naming the problem, never an exception of another kind.

Each property runs on the same examples every time (the `ci` profile in tests/conftest.py), plus
`@example`s of the input classes that once escaped as other exceptions; `-m slow` runs every
property again on many random examples, and a failure prints the `@reproduce_failure` blob that
replays it.
"""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tasks.prepare_data import prepare_data
from trainflow.data.parquet import IMAGE_COLUMN, IMAGE_SHAPE_METADATA_KEY, LABEL_COLUMN
from trainflow.data.prepared import read_split
from trainflow.datasets import DataSource, PreparationSpec
from trainflow.errors import DataSourceError
from trainflow.paths import PREPARED_SPLITS, ArtifactPaths


def read_and_split(source: str) -> None:
    """Prepare like the pipeline: a clean result or a DataSourceError, nothing else."""
    parsed = DataSource.parse(source)
    with tempfile.TemporaryDirectory() as artifacts:
        try:
            prepared = prepare_data(parsed, PreparationSpec(), ArtifactPaths.at(artifacts))
        except DataSourceError as error:
            message = str(error)
            assert message, "a DataSourceError must say what is wrong"
            assert "\n" not in message, "the CLI prints the error as one line"
            assert str(parsed.location) in message, "the error names the file or directory"
            return
        splits = [read_split(prepared.paths.split(name)) for name in PREPARED_SPLITS]
    for images, labels in splits:
        assert images.dtype == np.float32 and labels.dtype == np.int64
        assert len(images) == len(labels) > 0
        assert np.isfinite(images).all() and 0 <= images.min() <= images.max() <= 1


def idx_bytes(type_code: int, shape: list[int], payload: bytes) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


RANDOM_IDX_BYTES = given(
    images=st.binary(max_size=400), labels=st.binary(max_size=200), compress=st.booleans()
)


@RANDOM_IDX_BYTES
def test_idx_reader_on_random_bytes(images, labels, compress):
    with tempfile.TemporaryDirectory() as directory:
        suffix = ".gz" if compress else ""
        for role, content in (("images-idx3", images), ("labels-idx1", labels)):
            path = Path(directory) / f"t10k-{role}-ubyte{suffix}"
            path.write_bytes(gzip.compress(content) if compress else content)
        read_and_split(f"idx:{directory}")


RANDOM_IDX_SHAPES = given(
    type_code=st.sampled_from([0x08, 0x08, 0x09, 0x0D]),
    image_shape=st.lists(st.integers(0, 12), min_size=0, max_size=4),
    label_count=st.integers(0, 40),
    label_values=st.binary(min_size=0, max_size=40),
    extra=st.integers(-3, 3),
)


@RANDOM_IDX_SHAPES
# Images without pixels: numpy's min() of a zero-size array used to escape as ValueError.
@example(type_code=0x08, image_shape=[1, 0, 0], label_count=1, label_values=b"", extra=0)
@example(type_code=0x08, image_shape=[3, 12, 0], label_count=3, label_values=b"\x01", extra=0)
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


RANDOM_IDX_HEADERS = given(
    dimensions=st.lists(st.one_of(st.integers(0, 3), st.integers(0, 2**32 - 1)), max_size=80),
    declared_count=st.one_of(st.none(), st.integers(0, 255)),
    payload=st.binary(max_size=64),
)


@RANDOM_IDX_HEADERS
# More dimensions than numpy arrays can have (64) used to fail the reshape with ValueError.
@example(dimensions=[0] * 255, declared_count=None, payload=b"")
# Dimensions whose int64 product wraps around to 0 promised an empty file, then failed the reshape.
@example(dimensions=[2**21, 2**21, 2**22], declared_count=None, payload=b"")
# The largest dimensions: the error used to quote a wrapped-around size.
@example(dimensions=[2**32 - 1] * 3, declared_count=None, payload=b"\x00")
# No values, but dimensions too large for numpy: the reshape failed with ValueError.
@example(dimensions=[0, 2**32 - 1, 2**32 - 1], declared_count=None, payload=b"")
def test_idx_reader_on_random_headers(dimensions, declared_count, payload):
    """Headers of any number and size of dimensions, declared or not, before a short payload."""
    count = len(dimensions) if declared_count is None else declared_count
    header = bytes([0, 0, 0x08, count]) + struct.pack(f">{len(dimensions)}I", *dimensions)
    # As many labels as images, up to the most a payload this short can match.
    label_count = min(dimensions[0], 64) if dimensions else 0
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "t10k-images-idx3-ubyte").write_bytes(header + payload)
        (root / "t10k-labels-idx1-ubyte").write_bytes(
            idx_bytes(0x08, [label_count], bytes(index % 10 for index in range(label_count)))
        )
        read_and_split(f"idx:{root}")


# Every kind of dtype numpy can save without pickling, plus object arrays, which it pickles.
DTYPES = [
    "uint8",
    "int64",
    "float16",
    "float32",
    "float64",
    "bool",
    "complex64",
    "timedelta64[s]",
    "datetime64[s]",
    "U3",
    "S2",
    "u1,u1",
    "O",
]


def counting_array(shape: list[int], dtype: str) -> np.ndarray:
    """0, 1, 2, ... in `shape` and `dtype` (a 0-d array for an empty shape)."""
    return np.arange(int(np.prod(shape)) if shape else 1).reshape(shape).astype(dtype)


ARRAYS = st.sampled_from(DTYPES).flatmap(
    lambda dtype: st.lists(st.integers(0, 6), min_size=0, max_size=4).map(
        lambda shape: counting_array(shape, dtype)
    )
)


RANDOM_NPZ_ARRAYS = given(
    arrays=st.dictionaries(
        st.sampled_from(["x_train", "y_train", "x_test", "y_test", "other"]), ARRAYS, max_size=5
    )
)


@RANDOM_NPZ_ARRAYS
def test_npz_reader_on_random_arrays(arrays):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.npz"
        np.savez(path, **arrays)
        read_and_split(f"npz:{path}")


RANDOM_NPZ_SPLITS = given(
    count=st.integers(0, 40),
    image_dimensions=st.lists(st.integers(0, 6), max_size=4),
    image_dtype=st.sampled_from(DTYPES),
    label_dimensions=st.lists(st.integers(0, 2), max_size=2),
    label_dtype=st.sampled_from(DTYPES),
)


@RANDOM_NPZ_SPLITS
# Images without pixels: numpy's min() of a zero-size array used to escape as ValueError.
@example(
    count=20, image_dimensions=[0, 0], image_dtype="uint8", label_dimensions=[], label_dtype="uint8"
)
@example(
    count=20,
    image_dimensions=[6, 0],
    image_dtype="float32",
    label_dimensions=[],
    label_dtype="int64",
)
# numpy counts timedelta64 as an integer type: such pixels and labels used to be accepted.
@example(
    count=20,
    image_dimensions=[2, 2],
    image_dtype="timedelta64[s]",
    label_dimensions=[],
    label_dtype="timedelta64[s]",
)
def test_npz_reader_on_random_splits(
    count, image_dimensions, image_dtype, label_dimensions, label_dtype
):
    """Images and labels of the same count (so that validation, not the count check, is reached)
    of random dimensions and dtypes."""
    images = counting_array([count, *image_dimensions], image_dtype)
    labels = counting_array([count, *label_dimensions], label_dtype)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.npz"
        np.savez(path, x_train=images, y_train=labels, x_test=images, y_test=labels)
        read_and_split(f"npz:{path}")


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


RANDOM_NPZ_BYTES = given(content=st.binary(max_size=600))


@RANDOM_NPZ_BYTES
# A single .npy array: np.load returns it instead of an archive, which used to fail the `with`.
@example(content=npy_bytes(np.zeros((2, 3, 3), np.uint8)))
# The start of a zip file: np.load's zipfile.BadZipFile used to escape.
@example(content=b"PK\x03\x04" + bytes(40))
def test_npz_reader_on_random_bytes(content):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.npz"
        path.write_bytes(content)
        read_and_split(f"npz:{path}")


def npz_archive(compression: int) -> bytes:
    """A valid npz (as numpy.savez writes it, but with any zip compression) of 20 small images."""
    buffer = io.BytesIO()
    images, labels = np.arange(20 * 9, dtype=np.uint8).reshape(20, 3, 3), np.arange(20) % 10
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, array in (("x", images), ("y", labels)):
            for split in ("train", "test"):
                archive.writestr(f"{name}_{split}.npy", npy_bytes(array))
    return buffer.getvalue()


DAMAGED_NPZ_ARCHIVES = given(
    compression=st.sampled_from(
        [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]
    ),
    changes=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4),
    length=st.one_of(st.none(), st.integers(0, 2000)),
)


@DAMAGED_NPZ_ARCHIVES
# A changed byte of stored data fails the CRC check: zipfile.BadZipFile used to escape.
@example(compression=zipfile.ZIP_STORED, changes=[(200, 0xFF)], length=None)
# A changed byte of LZMA data: lzma.LZMAError used to escape.
@example(compression=zipfile.ZIP_LZMA, changes=[(100, 0xFF)], length=None)
# An unknown compression method in the central directory: NotImplementedError used to escape.
@example(compression=zipfile.ZIP_STORED, changes=[(1364, 99)], length=None)
# The encryption flag in the central directory: RuntimeError used to escape.
@example(compression=zipfile.ZIP_STORED, changes=[(1362, 1)], length=None)
def test_npz_reader_on_damaged_archives(compression, changes, length):
    """A valid npz with a few bytes changed (positions wrap around) and possibly cut short."""
    content = bytearray(npz_archive(compression))
    for position, value in changes:
        content[position % len(content)] = value
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "data.npz"
        path.write_bytes(bytes(content[:length]))
        read_and_split(f"npz:{path}")


# Rows 0 and 2 hold a null pixel; row 1 is a null image.
IMAGES_WITH_NULLS = pa.array([[1, None, 3, 4], None, [5, 6, 7, 8]], pa.list_(pa.uint8(), 4))


COLUMNS = st.sampled_from(
    [
        pa.array([1, 2, 3]),
        pa.array(["a", "b", "c"]),
        pa.array([0.5, float("nan"), 2.0]),
        pa.array([[1, 2], [3], []]),
        pa.FixedSizeListArray.from_arrays(pa.array(np.arange(12, dtype=np.uint8)), 4),
        pa.FixedSizeListArray.from_arrays(pa.array(np.linspace(0, 1, 12)), 4),
        pa.array([None, 1, 2]),
        IMAGES_WITH_NULLS,
        pa.array([[], [], []], pa.list_(pa.uint8(), 0)),
    ]
)


RANDOM_PARQUET_TABLES = given(
    columns=st.dictionaries(st.sampled_from(["image", "label", "extra"]), COLUMNS, max_size=3),
    garbage=st.one_of(st.none(), st.binary(max_size=300)),
)


@RANDOM_PARQUET_TABLES
# A null image vanished from the flattened pixels and failed the reshape with ValueError.
@example(columns={"image": IMAGES_WITH_NULLS, "label": pa.array([1, 2, 3])}, garbage=None)
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


SHAPE_METADATA = st.one_of(
    st.none(),
    st.binary(max_size=12),
    st.from_regex(r"\A-?[0-9]{1,2}(,-?[0-9]{1,2}){0,2}\Z").map(str.encode),
)


RANDOM_PARQUET_NULLS_AND_SHAPES = given(
    rows=st.integers(0, 12),
    height=st.integers(0, 3),
    width=st.integers(0, 3),
    null_labels=st.sets(st.integers(0, 11), max_size=2),
    null_images=st.sets(st.integers(0, 11), max_size=2),
    null_pixels=st.sets(st.tuples(st.integers(0, 11), st.integers(0, 8)), max_size=2),
    shape_metadata=SHAPE_METADATA,
)


def clean_rows(rows: int) -> dict[str, object]:
    """Keyword arguments for test_parquet_reader_on_random_nulls_and_shapes without nulls."""
    return {"rows": rows, "null_labels": set(), "null_images": set(), "null_pixels": set()}


@RANDOM_PARQUET_NULLS_AND_SHAPES
# Image shapes in the schema metadata that are not two positive integers used to escape as
# ValueError (or UnicodeDecodeError), or to pass the pixel count check and fail the reshape.
@example(**clean_rows(4), height=2, width=2, shape_metadata=b"a,b")
@example(**clean_rows(4), height=2, width=2, shape_metadata=b"1,2,3")
@example(**clean_rows(4), height=2, width=2, shape_metadata=b"")
@example(**clean_rows(4), height=2, width=2, shape_metadata=b"\xff\xfe")
@example(**clean_rows(4), height=2, width=2, shape_metadata=b"-2,-2")
@example(**clean_rows(4), height=0, width=0, shape_metadata=b"0,0")
# Lists of 0 pixels: pyarrow cannot read their rows back.
@example(**clean_rows(4), height=0, width=3, shape_metadata=None)
# A null image vanished from the flattened pixels and failed the reshape with ValueError.
@example(
    rows=4,
    height=2,
    width=2,
    null_labels=set(),
    null_images={1},
    null_pixels=set(),
    shape_metadata=None,
)
def test_parquet_reader_on_random_nulls_and_shapes(
    rows, height, width, null_labels, null_images, null_pixels, shape_metadata
):
    """Tables of the right columns with random image sizes, nulls and image shape metadata."""
    pixel_count = height * width
    images = [
        None
        if row in null_images
        else [None if (row, pixel) in null_pixels else row for pixel in range(pixel_count)]
        for row in range(rows)
    ]
    labels = [None if row in null_labels else row % 10 for row in range(rows)]
    table = pa.table(
        {
            IMAGE_COLUMN: pa.array(images, pa.list_(pa.uint8(), pixel_count)),
            LABEL_COLUMN: pa.array(labels, pa.int64()),
        }
    )
    if shape_metadata is not None:
        table = table.replace_schema_metadata({IMAGE_SHAPE_METADATA_KEY: shape_metadata})
    with tempfile.TemporaryDirectory() as directory:
        for split in ("train", "test"):
            pq.write_table(table, Path(directory) / f"{split}.parquet")
        read_and_split(f"parquet:{directory}")


# Each property with the strategies that feed it, for the slow runs on random examples.
PROPERTIES = [
    (RANDOM_IDX_BYTES, test_idx_reader_on_random_bytes),
    (RANDOM_IDX_SHAPES, test_idx_reader_on_random_shapes),
    (RANDOM_IDX_HEADERS, test_idx_reader_on_random_headers),
    (RANDOM_NPZ_ARRAYS, test_npz_reader_on_random_arrays),
    (RANDOM_NPZ_SPLITS, test_npz_reader_on_random_splits),
    (RANDOM_NPZ_BYTES, test_npz_reader_on_random_bytes),
    (DAMAGED_NPZ_ARCHIVES, test_npz_reader_on_damaged_archives),
    (RANDOM_PARQUET_TABLES, test_parquet_reader_on_random_tables_and_bytes),
    (RANDOM_PARQUET_NULLS_AND_SHAPES, test_parquet_reader_on_random_nulls_and_shapes),
]


# A fresh random seed each run (`--hypothesis-seed=N` repeats one), and many more examples than
# the `ci` profile's fixed ones.
MANY_RANDOM_EXAMPLES = settings(derandomize=False, max_examples=3000)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategies", "property_test"),
    PROPERTIES,
    ids=[property_test.__name__ for _, property_test in PROPERTIES],
)
def test_property_on_many_random_examples(strategies, property_test):
    """The same property on random examples; a failure prints the falsifying example and the
    `@reproduce_failure(...)` decorator that replays it."""
    MANY_RANDOM_EXAMPLES(strategies(property_test.hypothesis.inner_test))()
