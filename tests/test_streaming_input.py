"""The streaming training input: each epoch's order is a pure function of (seed, epoch), every
example comes once an epoch, the batches follow the documented order, and the position at step N
is the same whether reached by training or by resuming."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainflow.contract import ModelContract, labels_for_loss
from trainflow.data.parquet import IMAGE_COLUMN, IMAGE_SHAPE_METADATA_KEY, LABEL_COLUMN
from trainflow.data.prepared import PreparedSplit
from trainflow.storage.artifacts import Storage
from trainflow.training.inputs import model_pixels
from trainflow.training.streaming import (
    epoch_windows,
    streaming_batches,
    streaming_epoch_order,
    window_groups_for,
)

ROWS, GROUP_ROWS, BATCH = 103, 8, 10  # 13 row groups, the last of 7 rows; 11 batches an epoch


def write_numbered_split(path, rows=ROWS, group_rows=GROUP_ROWS):
    """A prepared split whose image i is 2x2 pixels all equal to i % 256 and whose label is i."""
    images = np.repeat((np.arange(rows) % 256).astype(np.uint8), 4)
    table = pa.table(
        {
            IMAGE_COLUMN: pa.FixedSizeListArray.from_arrays(pa.array(images, pa.uint8()), 4),
            LABEL_COLUMN: pa.array(np.arange(rows), pa.int64()),
        }
    ).replace_schema_metadata({IMAGE_SHAPE_METADATA_KEY: "2,2"})
    pq.write_table(table, path, row_group_size=group_rows)
    return PreparedSplit(path, Storage.at(path.parent))


def fed_batches(split, epochs, window_groups, skip_steps=0):
    """The (images, labels) batches the streaming input feeds, as NumPy arrays."""
    batches = streaming_batches(
        split, 7, epochs, BATCH, window_groups, lambda labels: labels, skip_steps
    )
    return [(images.numpy(), labels.numpy()) for images, labels in batches]


@pytest.fixture
def split(tmp_path):
    return write_numbered_split(tmp_path / "train.parquet")


def test_the_split_is_read_by_row_group(split):
    assert split.group_rows == [8] * 12 + [7]
    assert (split.rows, split.image_shape, split.pixel_dtype) == (ROWS, (2, 2), np.uint8)
    images, labels = split.row_groups([3, 0])
    assert labels.tolist() == [*range(24, 32), *range(8)]
    assert (images[:, 0, 0] == labels).all()
    assert split.images_at(np.array([102, 5, 40]))[:, 1, 1].tolist() == [102, 5, 40]


@pytest.mark.parametrize("window_groups", [1, 3, 13])
def test_each_epoch_feeds_every_example_once_in_the_documented_order(split, window_groups):
    batches = fed_batches(split, range(2), window_groups)
    assert [len(labels) for _, labels in batches] == [10] * 10 + [3] + [10] * 10 + [3]
    for epoch, epoch_batches in enumerate((batches[:11], batches[11:])):
        fed = np.concatenate([labels for _, labels in epoch_batches])
        assert (
            fed.tolist()
            == streaming_epoch_order(7, epoch, split.group_rows, window_groups).tolist()
        )
        assert sorted(fed.tolist()) == list(range(ROWS))  # the same multiset as in memory
        for images, labels in epoch_batches:  # each image travels with its label
            assert (images[:, 0, 0] == labels % 256).all()
    first, second = (
        np.concatenate([labels for _, labels in part]) for part in (batches[:11], batches[11:])
    )
    assert first.tolist() != second.tolist()


def test_a_window_shuffles_its_row_groups_rows_together(split):
    """The documented order: row groups in a seeded order, cut into windows; the rows of a window
    come before the next window's, in a seeded order within it."""
    order = streaming_epoch_order(7, 0, split.group_rows, 3)
    starts = 0
    for window, rows in epoch_windows(7, 0, split.group_rows, 3):
        members = {row for group in window for row in range(8 * group, min(8 * group + 8, ROWS))}
        fed = order[starts : starts + len(rows)]
        assert set(fed.tolist()) == members
        starts += len(rows)
    assert starts == ROWS
    # One window over the whole split is a shuffle of all of it, not the file order.
    assert streaming_epoch_order(7, 0, split.group_rows, 13).tolist() != list(range(ROWS))


def test_the_order_is_a_pure_function_of_seed_and_epoch(split):
    order = streaming_epoch_order(7, 4, split.group_rows, 3)
    assert order.tolist() == streaming_epoch_order(7, 4, split.group_rows, 3).tolist()
    assert order.tolist() != streaming_epoch_order(8, 4, split.group_rows, 3).tolist()
    assert order.tolist() != streaming_epoch_order(7, 5, split.group_rows, 3).tolist()


@pytest.mark.parametrize("skip_steps", [1, 2, 5, 10])
def test_a_resumed_input_feeds_the_batches_after_its_step(split, skip_steps):
    """Skipping N steps (some whole windows among them) gives exactly the batches an uninterrupted
    epoch feeds after its N-th, then the next epochs unchanged."""
    uninterrupted = fed_batches(split, range(2, 4), 3)
    resumed = fed_batches(split, range(2, 4), 3, skip_steps=skip_steps)
    assert len(resumed) == len(uninterrupted) - skip_steps
    for (images, labels), (expected_images, expected_labels) in zip(
        resumed, uninterrupted[skip_steps:], strict=True
    ):
        assert labels.tolist() == expected_labels.tolist()
        assert np.array_equal(images, expected_images)


def test_labels_reach_the_loss_in_its_form(split):
    contract = ModelContract(labels="one_hot")
    batches = streaming_batches(
        split, 1, range(1), BATCH, 2, lambda labels: labels_for_loss(labels, contract, ROWS)
    )
    _, targets = next(iter(batches))
    assert targets.shape == (BATCH, ROWS) and targets.dtype.name == "float32"


def test_pixels_are_scaled_as_the_model_expects():
    stored = np.array([[0, 51, 255]], dtype=np.uint8)
    assert model_pixels(stored, "unit").numpy()[0].tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert model_pixels(stored, "raw").numpy().tolist() == [[0.0, 51.0, 255.0]]
    # The same numbers as NumPy's division, so both input paths feed the same pixels.
    every = np.arange(256, dtype=np.uint8)
    assert np.array_equal(
        model_pixels(every, "unit").numpy(), every.astype(np.float32) / np.float32(255)
    )


def test_a_window_holds_as_many_row_groups_as_its_bytes_allow(split):
    assert window_groups_for(split, 8 * 4 * 3) == 3  # 8 rows of 4 bytes a group
    assert window_groups_for(split, 1) == 1  # never less than one group
