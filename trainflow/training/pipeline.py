"""The in-memory training input: each epoch's batches in that epoch's seeded order, gathered from
the whole split held as one tensor (images as stored: uint8 for an 8-bit source)."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def steps_per_epoch(train_rows: int, batch_size: int) -> int:
    """Training steps in one epoch (the last batch may be smaller)."""
    return math.ceil(train_rows / batch_size)


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The order of the training examples in `epoch`: a pure function of seed and epoch, so that a
    resumed run feeds exactly the batches the interrupted one would have."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def training_batches(
    images: np.ndarray,
    targets: np.ndarray,
    seed: int,
    epochs: range,
    batch_size: int,
    skip_steps: int = 0,
) -> tf.data.Dataset:
    """The training batches of `epochs`, each epoch in its `epoch_order`, without the first
    `skip_steps` batches (those a resumed run has trained already)."""
    orders = np.stack([epoch_order(seed, epoch, len(targets)) for epoch in epochs])
    images, targets = tf.constant(images), tf.constant(targets)

    # Plain graph code: nothing for AutoGraph to convert (and its source lookup fails on lambdas).
    @tf.autograph.experimental.do_not_convert
    def batches_of(order: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    @tf.autograph.experimental.do_not_convert
    def examples(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(images, batch), tf.gather(targets, batch)

    return (
        tf.data.Dataset.from_tensor_slices(orders)
        .flat_map(batches_of)
        .skip(skip_steps)
        .map(examples)
    )
