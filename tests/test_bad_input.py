"""Bad data through the command line: one line naming the file and the problem, exit status 2, no
traceback unless --debug, and earlier results untouched."""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from examples.datasets import write_rgb_image_folder
from tests.conftest import TRAINFLOW, synthetic_images, write_idx_pair
from trainflow.data.parquet import IMAGE_COLUMN, IMAGE_SHAPE_METADATA_KEY, LABEL_COLUMN
from trainflow.errors import DataSourceError


def _idx(directory: Path, images: np.ndarray, labels: np.ndarray) -> str:
    write_idx_pair(directory, "t10k", images, labels)
    return f"idx:{directory}"


def truncated_gzip(directory: Path) -> tuple[str, str]:
    source = _idx(directory, *synthetic_images(100, seed=1))
    images = directory / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:200])
    return source, "t10k-images-idx3-ubyte.gz: cannot decompress"


def wrong_magic(directory: Path) -> tuple[str, str]:
    source = _idx(directory, *synthetic_images(100, seed=1))
    content = gzip.decompress((directory / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (directory / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x0d" + content[3:])
    )
    return source, "t10k-labels-idx1-ubyte.gz: not an IDX file"


def counts_differ(directory: Path) -> tuple[str, str]:
    images, labels = synthetic_images(100, seed=1)
    return _idx(directory, images, labels[:90]), "100 images but 90 labels"


def wrong_dimensions(directory: Path) -> tuple[str, str]:
    images, labels = synthetic_images(100, seed=1)
    return _idx(directory, images.reshape(100, -1), labels), "expected (count, height, width)"


def labels_out_of_range(directory: Path) -> tuple[str, str]:
    images, labels = synthetic_images(100, seed=1)
    labels = labels.astype(np.int8)
    labels[3] = -1
    return _npz(directory, x_train=images, y_train=labels, x_test=images, y_test=labels), (
        "labels range -1..9"
    )


def labels_beyond_the_number_of_classes(directory: Path) -> tuple[str, str, str, str]:
    images, labels = synthetic_images(100, seed=1)
    labels[3] = 12
    return (
        _idx(directory, images, labels),
        "labels go up to 12; --num-classes 10 allows 0..9",
        ("--num-classes"),
        "10",
    )


def _image_folder(directory: Path) -> str:
    write_rgb_image_folder(directory, per_class=6)
    return f"images:{directory}"


def unreadable_image_in_a_class_folder(directory: Path) -> tuple[str, str]:
    source = _image_folder(directory)
    (directory / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    return source, "broken.png: not a readable PNG or JPEG image"


def images_of_mixed_sizes(directory: Path) -> tuple[str, str]:
    source = _image_folder(directory)
    Image.new("RGB", (20, 16)).save(directory / "red" / "larger.png")
    return source, "images have different sizes (blue/blue-000.png is 12x12, red/larger.png is"


def zero_size_images(directory: Path) -> tuple[str, str]:
    labels = synthetic_images(100, seed=1)[1]
    source = _idx(directory, np.zeros((100, 28, 0), np.uint8), labels)
    return source, "images have shape (100, 28, 0); an image needs a height and a width"


def _npz(directory: Path, **arrays: np.ndarray) -> str:
    directory.mkdir(parents=True)
    np.savez(directory / "data.npz", **arrays)
    return f"npz:{directory / 'data.npz'}"


def nan_pixels(directory: Path) -> tuple[str, str]:
    x_train, y_train = synthetic_images(100, seed=1)
    x_test, y_test = synthetic_images(50, seed=2)
    x_train = x_train.astype(np.float32) / 255
    x_train[5, 2, 2] = np.nan
    source = _npz(directory, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return source, "NaN or infinite"


def empty_dataset(directory: Path) -> tuple[str, str]:
    empty_images, empty_labels = np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8)
    x_test, y_test = synthetic_images(50, seed=2)
    source = _npz(
        directory, x_train=empty_images, y_train=empty_labels, x_test=x_test, y_test=y_test
    )
    return source, "no examples"


def class_missing_from_a_split(directory: Path) -> tuple[str, str]:
    x_train, y_train = synthetic_images(100, seed=1)
    x_test, y_test = synthetic_images(50, seed=2)
    keep = y_test != 7
    source = _npz(
        directory, x_train=x_train, y_train=y_train, x_test=x_test[keep], y_test=y_test[keep]
    )
    return source, "class 7"


def npz_without_keys(directory: Path) -> tuple[str, str]:
    images, labels = synthetic_images(100, seed=1)
    return _npz(directory, images=images, labels=labels), "missing arrays x_train"


def npz_holding_a_single_array(directory: Path) -> tuple[str, str]:
    directory.mkdir(parents=True)
    with (directory / "data.npz").open("wb") as stream:  # np.save instead of np.savez
        np.save(stream, synthetic_images(100, seed=1)[0])
    return f"npz:{directory / 'data.npz'}", "a single .npy array, not an npz archive"


def _parquet(directory: Path, mutate: Callable[[pa.Table], pa.Table]) -> str:
    directory.mkdir(parents=True)
    for split, seed in (("train", 1), ("test", 2)):
        images, labels = synthetic_images(100, seed=seed)
        table = pa.table(
            {
                IMAGE_COLUMN: pa.FixedSizeListArray.from_arrays(
                    pa.array(images.reshape(-1)), 28 * 28
                ),
                LABEL_COLUMN: pa.array(labels.astype(np.int64)),
            }
        )
        pq.write_table(mutate(table), directory / f"{split}.parquet")
    return f"parquet:{directory}"


def parquet_missing_column(directory: Path) -> tuple[str, str]:
    return _parquet(directory, lambda table: table.drop_columns([LABEL_COLUMN])), "columns are"


def parquet_extra_column(directory: Path) -> tuple[str, str]:
    def add(table: pa.Table) -> pa.Table:
        return table.append_column("weight", pa.array(np.ones(table.num_rows)))

    return _parquet(directory, add), "columns are ['image', 'label', 'weight']"


def parquet_mistyped_column(directory: Path) -> tuple[str, str]:
    def retype(table: pa.Table) -> pa.Table:
        labels = pa.array([str(value) for value in table[LABEL_COLUMN].to_pylist()])
        return table.set_column(1, LABEL_COLUMN, labels)

    return _parquet(directory, retype), "column 'label' has type string"


def parquet_bad_image_shape(directory: Path) -> tuple[str, str]:
    def describe_shape(table: pa.Table) -> pa.Table:
        return table.replace_schema_metadata({IMAGE_SHAPE_METADATA_KEY: b"28x28"})

    return _parquet(directory, describe_shape), "trainflow.image_shape is '28x28'"


def parquet_null_label(directory: Path) -> tuple[str, str]:
    def blank_one_label(table: pa.Table) -> pa.Table:
        labels = table[LABEL_COLUMN].to_pylist()
        labels[7] = None
        return table.set_column(1, LABEL_COLUMN, pa.array(labels, pa.int64()))

    return _parquet(directory, blank_one_label), "column 'label' has 1 null labels"


def parquet_null_image(directory: Path) -> tuple[str, str]:
    def blank_one_image(table: pa.Table) -> pa.Table:
        images = table[IMAGE_COLUMN].to_pylist()
        images[7] = None
        return table.set_column(0, IMAGE_COLUMN, pa.array(images, table[IMAGE_COLUMN].type))

    return _parquet(directory, blank_one_image), "column 'image' has 1 null images"


def missing_path(directory: Path) -> tuple[str, str]:
    return f"idx:{directory / 'nowhere'}", "does not exist"


def no_recognisable_files(directory: Path) -> tuple[str, str]:
    directory.mkdir(parents=True)
    (directory / "notes.txt").write_text("not data")
    return f"idx:{directory}", "holds no recognisable files"


BAD_DATA = [
    truncated_gzip,
    wrong_magic,
    counts_differ,
    wrong_dimensions,
    labels_out_of_range,
    labels_beyond_the_number_of_classes,
    unreadable_image_in_a_class_folder,
    images_of_mixed_sizes,
    zero_size_images,
    nan_pixels,
    empty_dataset,
    class_missing_from_a_split,
    npz_without_keys,
    npz_holding_a_single_array,
    parquet_missing_column,
    parquet_extra_column,
    parquet_mistyped_column,
    parquet_bad_image_shape,
    parquet_null_label,
    parquet_null_image,
    missing_path,
    no_recognisable_files,
]


def _trainflow_run(source: str, artifacts: Path, environment: dict, *options: str):
    return subprocess.run(
        [
            TRAINFLOW,
            "run",
            "--dataset",
            source,
            "--epochs",
            "1",
            "--artifacts",
            str(artifacts),
            *options,
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,  # the tests look at the exit status
    )


# Through the command line in CI: a case of each reader and of each stage that finds a problem
# (before anything starts, decoding, checking values, splitting, with an option); the rest under
# `-m slow`. Every case is checked in process below: the same error, which the command line
# prints as its one line.
THROUGH_THE_COMMAND_LINE = {
    missing_path,
    truncated_gzip,
    labels_beyond_the_number_of_classes,
    unreadable_image_in_a_class_folder,
    nan_pixels,
    class_missing_from_a_split,
    npz_holding_a_single_array,
    parquet_null_image,
}


@pytest.mark.parametrize(
    "make_source",
    [
        pytest.param(
            make_source,
            id=make_source.__name__,
            marks=() if make_source in THROUGH_THE_COMMAND_LINE else pytest.mark.slow,
        )
        for make_source in BAD_DATA
    ],
)
def test_bad_data_is_one_line_naming_the_file_and_exit_2(
    make_source, tmp_path, artifacts, server_environment
):
    source, problem, *options = make_source(tmp_path / "source")
    completed = _trainflow_run(source, artifacts, server_environment, *options)
    assert completed.returncode == 2, completed.stderr
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("trainflow: error: ")
    assert problem in last_line
    assert str(tmp_path / "source") in last_line  # the file or directory is named
    assert "Traceback" not in completed.stderr


def test_debug_shows_the_traceback(tmp_path, artifacts, server_environment):
    source, _ = labels_out_of_range(tmp_path / "source")
    completed = _trainflow_run(source, artifacts, server_environment, "--debug")
    assert completed.returncode != 0
    assert "Traceback" in completed.stderr and "DataSourceError" in completed.stderr


def test_every_bad_data_case_is_a_data_source_error_in_process(tmp_path):
    from tasks.prepare_data import prepare_data
    from trainflow.datasets import DataSource, PreparationSpec
    from trainflow.paths import ArtifactPaths

    for make_source in BAD_DATA:
        source, problem, *options = make_source(tmp_path / make_source.__name__)
        preparation = PreparationSpec(num_classes=int(options[1]) if options else None)
        with pytest.raises(DataSourceError, match=None) as raised:
            prepare_data(
                DataSource.parse(source), preparation, ArtifactPaths.at(tmp_path / "artifacts")
            )
        assert problem in str(raised.value), make_source.__name__
        assert str(tmp_path / make_source.__name__) in str(raised.value), make_source.__name__
