import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import synthetic_images
from trainflow.data.prepared import read_split
from trainflow.data.raw import RawSplit
from trainflow.data.split_writer import SplitWriter
from trainflow.data.splitting import (
    class_counts,
    number_of_classes,
    plan_splits,
    stratified_split,
    stream_splits,
)
from trainflow.data.validation import check_split, normalised_pixels
from trainflow.datasets import PreparationSpec
from trainflow.errors import DataSourceError
from trainflow.paths import PREPARED_SPLITS


def raw(images, labels, origin="test.idx"):
    return RawSplit.of_arrays(np.asarray(images), np.asarray(labels), origin)


def normalise_split(split: RawSplit) -> tuple[np.ndarray, np.ndarray]:
    """Check and normalise a whole split, as preparation does chunk by chunk."""
    checked = check_split(split)
    return normalised_pixels(split.images, checked, checked.pixel_dtype), checked.labels


def split_dataset(splits: dict[str, RawSplit], spec: PreparationSpec) -> dict:
    """The prepared splits as preparation streams them to its writers, gathered in memory."""
    parts = {name: [] for name in PREPARED_SPLITS}
    stream_splits(
        splits,
        plan_splits(splits, spec),
        lambda name, images, labels: parts[name].append((images, labels)),
    )
    return {
        name: tuple(np.concatenate(arrays) for arrays in zip(*chunks, strict=True))
        for name, chunks in parts.items()
    }


def labels_of(splits: dict) -> dict[str, np.ndarray]:
    return {name: labels for name, (_, labels) in splits.items()}


def test_integer_pixels_stay_8_bit_and_float_pixels_float():
    images, labels = normalise_split(raw(np.full((2, 4, 4), 255, np.int64), [3, 4]))
    assert images.dtype == np.uint8 and images.max() == 255
    assert labels.dtype == np.int64 and labels.tolist() == [3, 4]
    floats, _ = normalise_split(raw(np.full((2, 4, 4), 0.5, np.float64), [3, 4]))
    assert floats.dtype == np.float32 and floats.max() == 0.5


def test_8_bit_splits_beside_float_splits_are_all_prepared_as_unit_floats():
    splits = {
        "train": raw(np.full((20, 4, 4), 255, np.uint8), [0, 1] * 10),
        "test": raw(np.full((4, 4, 4), 0.5, np.float32), [0, 1] * 2),
    }
    prepared = split_dataset(splits, PreparationSpec())
    assert {images.dtype for images, _ in prepared.values()} == {np.dtype(np.float32)}
    assert prepared["train"][0].max() == 1.0 and prepared["test"][0].max() == 0.5


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((3, 4, 4), np.uint8), [1, 2], "3 images but 2 labels"),
        (np.zeros((2, 16), np.uint8), [1, 2], "expected \\(count, height, width\\)"),
        (np.zeros((0, 4, 4), np.uint8), np.zeros(0, np.int64), "no examples"),
        (np.zeros((2, 4, 4), np.uint8), [-1, 2], "labels range -1..2"),
        (np.full((2, 4, 4), np.nan, np.float32), [1, 2], "NaN or infinite"),
        (np.full((2, 4, 4), np.inf, np.float32), [1, 2], "NaN or infinite"),
        (np.full((2, 4, 4), 7.0, np.float32), [1, 2], "must lie in \\[0, 1\\]"),
        (np.zeros((2, 4, 4), np.uint8), [1.5, 2.0], "whole numbers"),
        (np.zeros((2, 0, 0), np.uint8), [1, 2], "height and a width of at least one pixel"),
        (np.zeros((2, 4, 0), np.float32), [1, 2], "height and a width of at least one pixel"),
        (np.zeros((2, 4, 4), "timedelta64[s]"), [1, 2], "pixels have dtype timedelta64"),
        (
            np.zeros((2, 4, 4), np.uint8),
            np.ones(2, "timedelta64[s]"),
            "labels have dtype timedelta64",
        ),
    ],
)
def test_invalid_splits_are_refused_naming_the_origin(images, labels, message):
    with pytest.raises(DataSourceError, match=f"test.idx: .*{message}"):
        normalise_split(raw(images, labels))


def test_stratified_split_is_deterministic_proportional_and_disjoint():
    labels = np.repeat(np.arange(10), 100)
    fractions = {"validation": 0.1, "test": 0.2}
    first = stratified_split(labels, fractions, seed=5)
    assert {name: len(index) for name, index in first.items()} == {
        "train": 700,
        "validation": 100,
        "test": 200,
    }
    for name, index in first.items():
        assert set(np.bincount(labels[index]).tolist()) == {len(index) // 10}, name
    assert len(np.unique(np.concatenate(list(first.values())))) == 1000
    again = stratified_split(labels, fractions, seed=5)
    other = stratified_split(labels, fractions, seed=6)
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not np.array_equal(first["test"], other["test"])


def test_single_split_source_is_split_three_ways():
    images, labels = synthetic_images(400, seed=1)
    splits = split_dataset({"all": raw(images, labels)}, PreparationSpec(seed=1))
    assert {name: len(labels) for name, (_, labels) in splits.items()} == {
        "train": 280,
        "validation": 40,
        "test": 80,
    }


def test_train_test_source_keeps_its_test_set():
    train, test = synthetic_images(300, seed=1), synthetic_images(100, seed=2)
    splits = split_dataset(
        {"train": raw(*train), "test": raw(*test)}, PreparationSpec(validation_fraction=0.2)
    )
    assert {name: len(labels) for name, (_, labels) in splits.items()} == {
        "train": 240,
        "validation": 60,
        "test": 100,
    }
    np.testing.assert_array_equal(splits["test"][1], test[1])


def test_a_class_missing_from_a_split_is_refused():
    images, labels = synthetic_images(400, seed=1)
    labels = np.where(labels == 7, 6, labels)
    with pytest.raises(DataSourceError, match="the train split has no examples of class 7"):
        split_dataset({"all": raw(images, labels)}, PreparationSpec())


def test_parquet_split_round_trips_exactly_in_either_pixel_range(tmp_path):
    images, labels = normalise_split(raw(*synthetic_images(30, seed=4)))
    with SplitWriter(tmp_path / "train.parquet", images.shape[1:], images.dtype) as writer:
        writer.write(images, labels)
    schema = pq.read_schema(tmp_path / "train.parquet")
    assert schema.field("image").type == pa.binary(28 * 28)  # the pixels' bytes, one a pixel
    assert schema.metadata[b"trainflow.pixel_type"] == b"uint8"
    raw_images, read_labels = read_split(tmp_path / "train.parquet", "raw")
    np.testing.assert_array_equal(raw_images, images.astype(np.float32))
    unit_images, _ = read_split(tmp_path / "train.parquet")
    assert unit_images.dtype == np.float32
    np.testing.assert_array_equal(unit_images, images.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(read_labels, labels)
    assert class_counts(read_labels, 10) == [3] * 10


def labelled(labels: list[int], shape: tuple[int, ...] = (4, 4)) -> dict:
    return {"all": raw(np.zeros((len(labels), *shape), np.uint8), labels)}


def test_any_number_of_classes_and_channels_is_split_by_class():
    labels = np.repeat(np.arange(37), 10)
    splits = split_dataset(labelled(labels.tolist(), (8, 8, 3)), PreparationSpec())
    assert number_of_classes(labels_of(splits), PreparationSpec()) == 37
    for images, split_labels in splits.values():
        assert images.shape[1:] == (8, 8, 3)
        assert sorted(set(split_labels.tolist())) == list(range(37))


def test_a_class_missing_from_a_split_names_the_option_that_allows_it():
    labels = [0] * 20 + [2] * 20  # class 1 has no examples at all
    with pytest.raises(DataSourceError, match="no examples of class 1; .* --num-classes 3 if"):
        split_dataset(labelled(labels), PreparationSpec())
    splits = split_dataset(labelled(labels), PreparationSpec(num_classes=3))
    assert number_of_classes(labels_of(splits), PreparationSpec(num_classes=3)) == 3


def test_labels_beyond_the_given_number_of_classes_are_refused():
    with pytest.raises(DataSourceError, match="labels go up to 4; --num-classes 3 allows 0..2"):
        split_dataset(labelled([0, 1, 2, 4] * 10), PreparationSpec(num_classes=3))


def test_a_single_class_is_not_a_classification_problem():
    with pytest.raises(DataSourceError, match="every label is 0; a classifier needs"):
        split_dataset(labelled([0] * 30), PreparationSpec())
