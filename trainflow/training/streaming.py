"""The training input streamed from the prepared Parquet, a window of row groups at a time.

Each epoch's order is a pure function of (seed, epoch), as on the in-memory path, so a resumed run
feeds exactly the batches the interrupted one would have, with no iterator state to save: the row
groups are shuffled, cut into windows of `window_groups` consecutive (shuffled) groups, and the rows
of each window are shuffled together. A row therefore meets rows of its window only, not the whole
split: the order is a full shuffle when one window holds the split, and coarser the smaller the
window is against the split (README, "Memory").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from trainflow.data.prepared import PreparedSplit

# What the generator hands tf.data at once: enough rows to keep per-element overhead low, few
# enough to keep the copies small. `rebatch` cuts them into the training batches.
PIECE_BYTES = 2**20


def epoch_windows(
    seed: int, epoch: int, group_rows: list[int], window_groups: int
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Each window of `epoch`: its row groups, in the order their rows are concatenated, and the
    permutation of those rows that is the window's order."""
    generator = np.random.default_rng([seed, epoch])
    groups = generator.permutation(len(group_rows)).tolist()
    for first in range(0, len(groups), window_groups):
        window = groups[first : first + window_groups]
        yield window, generator.permutation(sum(group_rows[group] for group in window))


def streaming_epoch_order(
    seed: int, epoch: int, group_rows: list[int], window_groups: int
) -> np.ndarray:
    """The row numbers of the split in the order the streaming input feeds them in `epoch`."""
    starts = np.cumsum([0, *group_rows])
    order = [
        np.concatenate([np.arange(starts[group], starts[group + 1]) for group in window])[rows]
        for window, rows in epoch_windows(seed, epoch, group_rows, window_groups)
    ]
    return np.concatenate(order)


def window_groups_for(split: PreparedSplit, window_bytes: int) -> int:
    """How many row groups fit in `window_bytes` of images (one at least)."""
    return max(1, window_bytes // max(1, max(split.group_rows) * split.image_bytes))


def streaming_batches(
    split: PreparedSplit,
    seed: int,
    epochs: range,
    batch_size: int,
    window_groups: int,
    labels_for_loss: Callable[[np.ndarray], np.ndarray],
    skip_steps: int = 0,
) -> tf.data.Dataset:
    """The training batches of `epochs` (images as stored, labels as the loss takes them), each
    epoch in its streaming order, without the first `skip_steps` batches of the first epoch."""
    piece_rows = max(batch_size, PIECE_BYTES // split.image_bytes)
    sample_targets = labels_for_loss(np.zeros(1, dtype=np.int64))

    def pieces(epoch: np.int64, skip_rows: np.int64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        start = 0  # row position in the epoch's order of the window's first row
        for window, order in epoch_windows(seed, int(epoch), split.group_rows, window_groups):
            end = start + len(order)
            if end > skip_rows:  # windows before the resume point are not read
                images, labels = split.row_groups(window)
                order = order[max(0, skip_rows - start) :]
                for first in range(0, len(order), piece_rows):
                    rows = order[first : first + piece_rows]
                    yield images[rows], labels_for_loss(labels[rows])
                del images, labels  # before the next window is read: one window at a time
            start = end

    signature = (images_spec(split), batch_spec(sample_targets))
    starts = [
        (epoch, skip_steps * batch_size if index == 0 else 0) for index, epoch in enumerate(epochs)
    ]

    # Plain graph code: nothing for AutoGraph to convert (and its source lookup fails on lambdas).
    @tf.autograph.experimental.do_not_convert
    def epoch_batches(start: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.from_generator(
            pieces, args=(start[0], start[1]), output_signature=signature
        ).rebatch(batch_size)

    return tf.data.Dataset.from_tensor_slices(np.array(starts, dtype=np.int64)).flat_map(
        epoch_batches
    )


def images_spec(split: PreparedSplit) -> tf.TensorSpec:
    """The spec of a batch of `split`'s images as stored, for `from_generator`."""
    return tf.TensorSpec((None, *split.image_shape), tf.as_dtype(split.pixel_dtype))


def batch_spec(sample: np.ndarray) -> tf.TensorSpec:
    """The spec of a batch of arrays like the batch `sample` (e.g. labels as a loss takes them)."""
    return tf.TensorSpec((None, *sample.shape[1:]), tf.as_dtype(sample.dtype))
