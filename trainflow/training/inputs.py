"""What the model is fed: the prepared splits as `tf.data` pipelines, held in memory or streamed
from where they lie, disk or object store (chosen by their size against the memory budget), with
pixels scaled in the pipeline to the range the model expects and labels in the form its loss
takes."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import tensorflow as tf

from trainflow.checkpoints.state import DataOrder
from trainflow.config import DataInput
from trainflow.contract import ModelContract, PixelRange, labels_for_loss
from trainflow.data.prepared import PreparedSplit
from trainflow.data.validation import MAX_PIXEL_VALUE
from trainflow.results import PreparedData
from trainflow.sizes import format_size
from trainflow.training.pipeline import training_batches
from trainflow.training.streaming import (
    batch_spec,
    images_spec,
    streaming_batches,
    window_groups_for,
)

logger = logging.getLogger("trainflow.train")

# The in-memory path holds the images twice (the array read and the tensor made of it).
IN_MEMORY_COPIES = 2
# The streaming path holds a window twice (read, then in its order) and pieces of it in tf.data's
# buffers and Arrow's read buffers: a window gets a quarter of the budget.
WINDOW_SHARE_OF_BUDGET = 4
# Prediction batches: 256 images, fewer when images are large (a batch of 180x180x3 float32
# pixels is 97 MiB at 256), so that evaluation's memory does not grow with the image size.
PREDICTION_BATCH_SIZE = 256
PREDICTION_BATCH_BYTES = 8 * 2**20
# Batches made ahead of the model: enough to overlap input and training, and a fixed number, where
# AUTOTUNE may buffer as many as a share of the machine's memory allows.
PREFETCH_BATCHES = 4


def model_pixels(images: tf.Tensor, pixels: PixelRange) -> tf.Tensor:
    """Stored pixels as the model takes them: float32, 8-bit ones divided by 255 for `unit` and
    kept as they are (0..255) for `raw`; float pixels are stored in [0, 1] already."""
    if images.dtype != tf.uint8:
        return images
    floats = tf.cast(images, tf.float32)
    return floats / np.float32(MAX_PIXEL_VALUE) if pixels == "unit" else floats


@dataclass(frozen=True)
class TrainingInput:
    """The training and validation input of one run, in memory or streamed."""

    mode: Literal["memory", "stream"]
    train: PreparedSplit
    validation: PreparedSplit
    contract: ModelContract
    num_classes: int
    window_groups: int

    def training_batches(
        self, seed: int, epochs: range, batch_size: int, skip_steps: int
    ) -> tf.data.Dataset:
        """The batches of `epochs`, each in its epoch's order, after the first `skip_steps`."""
        if self.mode == "memory":
            images, labels = self.train.read()
            batches = training_batches(
                images, self._targets(labels), seed, epochs, batch_size, skip_steps
            )
        else:
            batches = streaming_batches(
                self.train, seed, epochs, batch_size, self.window_groups, self._targets, skip_steps
            )
        return self._for_model(batches)

    def validation_batches(self, batch_size: int) -> tf.data.Dataset:
        """The validation split in file order, in batches of `batch_size`."""
        if self.mode == "memory":
            images, labels = self.validation.read()
            batches = tf.data.Dataset.from_tensor_slices((images, self._targets(labels)))
            return self._for_model(batches.batch(batch_size))
        targets = self._targets(np.zeros(1, dtype=np.int64))
        signature = (images_spec(self.validation), batch_spec(targets))
        batches = tf.data.Dataset.from_generator(
            lambda: (
                (images, self._targets(labels))
                for images, labels in self.validation.batches(batch_size)
            ),
            output_signature=signature,
        )
        return self._for_model(batches)

    @property
    def order(self) -> DataOrder:
        """The epochs' order this input gives, as a resume checkpoint records it."""
        if self.mode == "memory":
            return DataOrder()
        return DataOrder(input="stream", window_groups=self.window_groups)

    def describe(self) -> str:
        """One line for the log: the path chosen and its numbers."""
        held = self.train.nbytes + self.validation.nbytes
        if self.mode == "memory":
            return f"in memory: {format_size(held)} of images"
        return (
            f"streamed from disk: {format_size(held)} of images, windows of "
            f"{self.window_groups} row groups of {max(self.train.group_rows)} rows"
        )

    def _targets(self, labels: np.ndarray) -> np.ndarray:
        return labels_for_loss(labels, self.contract, self.num_classes)

    def _for_model(self, batches: tf.data.Dataset) -> tf.data.Dataset:
        scale = functools.partial(model_pixels, pixels=self.contract.pixels)
        scaled = batches.map(
            tf.autograph.experimental.do_not_convert(
                lambda images, targets: (scale(images), targets)
            )
        )
        return scaled.prefetch(PREFETCH_BATCHES)


def training_input(
    data: PreparedData,
    contract: ModelContract,
    data_input: DataInput,
    memory_budget: int,
    resumed_order: DataOrder | None = None,
) -> TrainingInput:
    """The input of a run on `data`: `data_input` if it says memory or stream, else in memory when
    the training and validation images fit in `memory_budget` as the in-memory path holds them.
    A resumed run keeps `resumed_order`, the order it started with."""
    train = PreparedSplit.of(data.paths, "train")
    validation = PreparedSplit.of(data.paths, "validation")
    if resumed_order is not None:
        mode, reason = resumed_order.input, "as the run started"
        window_groups = resumed_order.window_groups or 1
    else:
        mode, reason = data_input, "given"
        if mode == "auto":
            held = IN_MEMORY_COPIES * (train.nbytes + validation.nbytes)
            mode, reason = ("memory" if held <= memory_budget else "stream"), "chosen"
        window_groups = window_groups_for(train, memory_budget // WINDOW_SHARE_OF_BUDGET)
    chosen = TrainingInput(
        mode=mode,
        train=train,
        validation=validation,
        contract=contract,
        num_classes=data.num_classes,
        window_groups=window_groups,
    )
    logger.info(
        "Training data %s (%s; memory budget %s)",
        chosen.describe(),
        reason,
        format_size(memory_budget),
    )
    return chosen


def prediction_batches(split: PreparedSplit, pixels: PixelRange) -> tf.data.Dataset:
    """A split's images in file order, streamed in batches, for `model.predict`."""
    model_image_bytes = split.image_bytes // split.pixel_dtype.itemsize * 4  # as float32
    batch_rows = max(1, min(PREDICTION_BATCH_SIZE, PREDICTION_BATCH_BYTES // model_image_bytes))
    batches = tf.data.Dataset.from_generator(
        lambda: (images for images, _ in split.batches(batch_rows)),
        output_signature=images_spec(split),
    )
    scale = tf.autograph.experimental.do_not_convert(lambda images: model_pixels(images, pixels))
    return batches.map(scale).prefetch(PREFETCH_BATCHES)
