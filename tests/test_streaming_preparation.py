"""Streaming preparation: every reader's source, prepared a chunk at a time, gives exactly the rows a
whole-array computation gives, in row groups of the promised size, in memory for a chunk and the
labels rather than for the dataset; and what only streaming can find out still fails before
anything is committed."""

from __future__ import annotations

import gzip
import json
import logging
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.prepare_data import prepare_data
from tests.conftest import REPO_ROOT
from trainflow.data import split_writer, splitting
from trainflow.data.parquet import (
    IMAGE_COLUMN,
    IMAGE_SHAPE_METADATA_KEY,
    LABEL_COLUMN,
    PIXEL_TYPE_METADATA_KEY,
)
from trainflow.data.preparation import PREPARED_FORMAT_CHANGES, data_fingerprint
from trainflow.data.splitting import stratified_split
from trainflow.datasets import DataSource, PreparationSpec
from trainflow.errors import DataSourceError
from trainflow.paths import PREPARED_SPLITS, ArtifactPaths

# Small images of 5 classes: 60 examples a class leave every class in every split.
SHAPE = (6, 5)
COUNT = 300
SPEC = PreparationSpec()


@dataclass
class Case:
    """A source in some format and what preparing it must give, computed from whole arrays."""

    source: str
    expected: dict[str, tuple[np.ndarray, np.ndarray]]
    raw_image_bytes: int  # of the largest raw image, to size chunks


def random_split(count: int, seed: int, shape: tuple[int, ...] = SHAPE):
    generator = np.random.default_rng(seed)
    labels = np.arange(count) % 5
    generator.shuffle(labels)
    return generator.integers(0, 256, (count, *shape), dtype=np.uint8), labels.astype(np.uint8)


def split_whole(images: np.ndarray, labels: np.ndarray, fractions: dict[str, float]) -> dict:
    """The in-memory computation: stratified indices, then fancy indexing of the whole arrays."""
    indices = stratified_split(labels, fractions, SPEC.seed)
    return {
        name: (images[index], labels[index].astype(np.int64)) for name, index in indices.items()
    }


ALL_FRACTIONS = {"validation": SPEC.validation_fraction, "test": SPEC.test_fraction}
TRAIN_FRACTIONS = {"validation": SPEC.validation_fraction}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def idx_case(directory: Path, compressed: bool) -> Case:
    images, labels = random_split(COUNT, seed=1)
    directory.mkdir()
    suffix, write = (".gz", gzip.compress) if compressed else ("", bytes)
    for role, array in (("images-idx3", images), ("labels-idx1", labels)):
        (directory / f"data-{role}-ubyte{suffix}").write_bytes(write(idx_bytes(array)))
    return Case(f"idx:{directory}", split_whole(images, labels, ALL_FRACTIONS), images[0].nbytes)


def npz_case(directory: Path, compressed: bool, float_train: bool = False) -> Case:
    """Train and test arrays; with `float_train`, 8-bit test pixels beside float train pixels."""
    (x_train, y_train), (x_test, y_test) = random_split(COUNT, seed=2), random_split(100, seed=3)
    if float_train:
        x_train = x_train.astype(np.float32) / np.float32(255)
    directory.mkdir()
    path = directory / "data.npz"
    save = np.savez_compressed if compressed else np.savez
    save(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    with np.load(path) as archive:  # the reference reads the whole arrays back
        x_train, y_train, x_test, y_test = (
            archive[key] for key in ("x_train", "y_train", "x_test", "y_test")
        )
    if float_train:
        x_test = x_test.astype(np.float32) / np.float32(255)
    expected = split_whole(x_train, y_train, TRAIN_FRACTIONS)
    expected["test"] = (x_test, y_test.astype(np.int64))
    return Case(f"npz:{path}", expected, x_train[0].nbytes)


def parquet_case(directory: Path) -> Case:
    """Train and test files of RGB images, in row groups of another size than the prepared ones."""
    directory.mkdir()
    whole = {}
    for name, seed, count in (("train", 4, COUNT), ("test", 5, 100)):
        images, labels = random_split(count, seed, (*SHAPE, 3))
        table = pa.table(
            {
                IMAGE_COLUMN: pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), 90),
                LABEL_COLUMN: pa.array(labels.astype(np.int32)),
            }
        ).replace_schema_metadata({IMAGE_SHAPE_METADATA_KEY: "6,5,3"})
        pq.write_table(table, directory / f"{name}.parquet", row_group_size=33)
        read = pq.read_table(directory / f"{name}.parquet")
        whole[name] = (
            read.column(IMAGE_COLUMN).combine_chunks().flatten().to_numpy().reshape(-1, *SHAPE, 3),
            read.column(LABEL_COLUMN).to_numpy(),
        )
    expected = split_whole(*whole["train"], TRAIN_FRACTIONS)
    expected["test"] = (whole["test"][0], whole["test"][1].astype(np.int64))
    return Case(f"parquet:{directory}", expected, 90)


def images_case(directory: Path) -> Case:
    images, labels = random_split(COUNT, seed=6, shape=(*SHAPE, 3))
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (directory / f"class-{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(directory / f"class-{label}" / f"{index:04d}.png")
    files = sorted(directory.glob("*/*.png"))  # class folders in name order, then file names
    decoded = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in files])
    file_labels = np.array([int(path.parent.name.removeprefix("class-")) for path in files])
    return Case(f"images:{directory}", split_whole(decoded, file_labels, ALL_FRACTIONS), 90)


CASES = {
    "idx-gzip": lambda directory: idx_case(directory, compressed=True),
    "idx-plain": lambda directory: idx_case(directory, compressed=False),
    "npz-savez": lambda directory: npz_case(directory, compressed=False),
    "npz-savez-compressed": lambda directory: npz_case(directory, compressed=True),
    "npz-float-beside-8-bit": lambda directory: npz_case(directory, False, float_train=True),
    "parquet": parquet_case,
    "images": images_case,
}


def prepared_rows(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A prepared split's rows as stored: pixels in their stored dtype, and labels."""
    table = pq.read_table(path)
    shape = tuple(map(int, table.schema.metadata[IMAGE_SHAPE_METADATA_KEY].decode().split(",")))
    dtype = np.dtype(table.schema.metadata[PIXEL_TYPE_METADATA_KEY].decode())
    pixels = np.frombuffer(b"".join(table.column(IMAGE_COLUMN).to_pylist()), dtype=dtype)
    return pixels.reshape(-1, *shape), table.column(LABEL_COLUMN).to_numpy()


@pytest.mark.parametrize("chunks", ["default", "small"])
@pytest.mark.parametrize("case", list(CASES))
def test_prepared_rows_are_those_of_the_whole_array_computation(
    case, chunks, tmp_path, artifacts, monkeypatch
):
    made = CASES[case](tmp_path / "source")
    expected_dtype = next(iter(made.expected.values()))[0].dtype
    if chunks == "small":  # chunks of 7 rows and row groups of 5 cross every split boundary
        monkeypatch.setattr(splitting, "PREPARATION_CHUNK_BYTES", 7 * made.raw_image_bytes)
        image_bytes = next(iter(made.expected.values()))[0][0].nbytes
        monkeypatch.setattr(split_writer, "PREPARED_ROW_GROUP_BYTES", 5 * image_bytes)
    prepared = prepare_data(DataSource.parse(made.source), SPEC, ArtifactPaths.at(artifacts))
    manifest = json.loads(prepared.paths.manifest.read_text())
    for name in PREPARED_SPLITS:
        images, labels = prepared_rows(prepared.paths.split(name))
        expected_images, expected_labels = made.expected[name]
        assert images.dtype == expected_images.dtype == expected_dtype, name
        np.testing.assert_array_equal(images, expected_images, err_msg=name)
        np.testing.assert_array_equal(labels, expected_labels, err_msg=name)
        row_group_rows = manifest["splits"][name]["row_group_rows"]
        if chunks == "small":
            assert row_group_rows == 5
        groups = pq.ParquetFile(prepared.paths.split(name)).metadata
        sizes = [groups.row_group(index).num_rows for index in range(groups.num_row_groups)]
        assert (
            sizes[:-1] == [row_group_rows] * (len(sizes) - 1) and 1 <= sizes[-1] <= row_group_rows
        )
        assert sum(sizes) == manifest["splits"][name]["rows"] == len(expected_labels)


@pytest.mark.parametrize("compressed", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize(("extra", "held"), [(-1, 8999), (1, 9001)], ids=["short", "long"])
def test_an_idx_file_of_another_length_than_promised_fails_before_anything_is_committed(
    compressed, extra, held, tmp_path, artifacts
):
    """A gzipped file's length is only known once it is read: preparing finds it out as it
    streams, and still before the prepared data is committed."""
    made = idx_case(tmp_path / "source", compressed)
    path = next((tmp_path / "source").glob("*images*"))
    content = idx_bytes(random_split(COUNT, seed=1)[0])
    content = content[:extra] if extra < 0 else content + bytes(extra)
    path.write_bytes(gzip.compress(content) if compressed else content)
    with pytest.raises(DataSourceError) as raised:
        prepare_data(DataSource.parse(made.source), SPEC, ArtifactPaths.at(artifacts))
    assert str(raised.value) == (
        f"{path}: IDX header promises 9000 values of shape (300, 6, 5), the file holds {held}"
    )
    assert list((artifacts / "data").glob("*/manifest.json")) == []


def test_an_image_that_fails_to_decode_is_one_line_naming_it(tmp_path, artifacts):
    """Its header reads (the first pass), its pixels do not (the second, chunk by chunk)."""
    made = images_case(tmp_path / "source")
    broken = sorted((tmp_path / "source" / "class-3").iterdir())[7]
    broken.write_bytes(broken.read_bytes()[:60])  # the header and the start of the pixels
    with Image.open(broken) as image:
        assert image.size == SHAPE[::-1]
    with pytest.raises(DataSourceError) as raised:
        prepare_data(DataSource.parse(made.source), SPEC, ArtifactPaths.at(artifacts))
    message = str(raised.value)
    assert (
        message.startswith(f"{broken}: not a readable PNG or JPEG image (") and "\n" not in message
    )
    assert list((artifacts / "data").glob("*/manifest.json")) == []


def test_data_prepared_in_an_older_format_is_prepared_again_and_said_so(
    tmp_path, artifacts, caplog
):
    made = idx_case(tmp_path / "source", compressed=True)
    first = prepare_data(DataSource.parse(made.source), SPEC, ArtifactPaths.at(artifacts))
    digest = json.loads(first.paths.manifest.read_text())["source_sha256"]
    older = ArtifactPaths.at(artifacts).data(data_fingerprint(digest, SPEC, version=2))
    first.paths.root.rename(older.root)  # as format version 2 would have named it
    with caplog.at_level(logging.INFO, logger="trainflow"):
        again = prepare_data(DataSource.parse(made.source), SPEC, ArtifactPaths.at(artifacts))
    assert not again.reused and again.fingerprint == first.fingerprint
    assert (
        f"Prepared data {older.location} is of format version 2; preparing it again as version 3 "
        f"({PREPARED_FORMAT_CHANGES[3]})"
    ) in caplog.messages


# Prepares the IDX source in argv[1] under argv[2]; prints the peak RSS after the imports and at
# the end (KiB), the rows, and whether TensorFlow was imported.
MEASURE_PREPARATION = """
import json, resource, sys, time
from tasks.prepare_data import prepare_data
from trainflow.datasets import DataSource, PreparationSpec
from trainflow.paths import ArtifactPaths
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
prepared = prepare_data(
    DataSource.parse(sys.argv[1]), PreparationSpec(num_classes=10), ArtifactPaths.at(sys.argv[2])
)
print(json.dumps({
    "imported_kib": imported,
    "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "seconds": time.perf_counter() - started,
    "rows": prepared.rows,
    "tensorflow": "tensorflow" in sys.modules,
}))
"""


def write_large_idx(directory: Path, count: int) -> None:
    """`count` random 28x28 images and their labels as a plain IDX pair, written piece by piece."""
    directory.mkdir()
    generator = np.random.default_rng(7)
    with (directory / "large-images-idx3-ubyte").open("wb") as stream:
        stream.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", count, 28, 28))
        for start in range(0, count, 50_000):
            rows = min(50_000, count - start)
            stream.write(generator.integers(0, 256, (rows, 28, 28), dtype=np.uint8).tobytes())
    labels = (np.arange(count) % 10).astype(np.uint8)
    (directory / "large-labels-idx1-ubyte").write_bytes(idx_bytes(labels))


def test_preparing_needs_memory_for_a_chunk_not_for_the_dataset(tmp_path):
    """400,000 images of 28x28 are 300 MiB of pixels; a whole-array preparation holds them at
    least twice. Streaming holds a chunk (8 MiB), a row group per split and the labels, and the
    Parquet writer's buffers: with the allocators' slack, the peak grew by 109 MiB here."""
    write_large_idx(tmp_path / "large", 400_000)
    completed = subprocess.run(
        [sys.executable, "-c", MEASURE_PREPARATION, f"idx:{tmp_path / 'large'}", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    assert measured["rows"] == {"train": 280_000, "validation": 40_000, "test": 80_000}
    assert not measured["tensorflow"]
    growth_mib = (measured["peak_kib"] - measured["imported_kib"]) / 1024
    assert growth_mib < 150, measured
