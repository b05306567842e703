"""The training loop of several workers: where Keras's `fit` stops working (under
`MultiWorkerMirroredStrategy`, keras-team/keras#20585), a step of our own under `strategy.run` over
the same Keras 3 model, optimizer and loss, driving the same callbacks `fit` would.

Every worker reads the same global batches (each epoch in its seeded order, as one process reads
them) and trains on its own slice of each: worker r of N takes rows [r·B/N, (r+1)·B/N) of a batch
of B rows. The sequence of global batches is thus a pure function of (seed, epoch), the same for
any N, and a worker's rows a pure function of (seed, epoch, N, r). The loss of a step is the sum of
the per-example losses over the worker's rows divided by the global batch's row count, so that the
gradients the optimizer sums across workers are those of the mean over the global batch.
Validation runs whole on every worker (their weights are identical), so every worker sees the
same logs and the callbacks (`EarlyStopping`, the NaN guard) decide the same on all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from trainflow.contract import ModelContract
from trainflow.errors import UserInputError
from trainflow.training.distributed.placement import Placement


class NotDistributableError(UserInputError):
    """A model the distributed training loop cannot train as its `fit` would."""


def per_example_loss(model: keras.Model) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The compiled loss as a function of (targets, outputs) giving one value per example, or
    `NotDistributableError` for what the loop does not reproduce of `fit`."""
    name = getattr(model, "name", "the model")
    if type(model).train_step is not keras.Model.train_step:
        raise NotDistributableError(
            f"model {name} overrides train_step, which --workers does not run; train it in one "
            "process or with --distribute mirrored"
        )
    if isinstance(model.loss, (dict, list, tuple)) or len(model.outputs or [None]) != 1:
        raise NotDistributableError(
            f"model {name} has several outputs or losses; --workers trains single-output "
            "classifiers: train it in one process or with --distribute mirrored"
        )
    loss = keras.losses.get(model.loss)
    if isinstance(loss, keras.losses.Loss):
        return loss.call  # unreduced: one value per example (what `Loss.__call__` reduces)
    if callable(loss):
        return loss
    raise NotDistributableError(f"model {name}: its loss {model.loss!r} is not a Keras loss")


def _predicted_classes(outputs: tf.Tensor, contract: ModelContract) -> tf.Tensor:
    if contract.binary:
        threshold = 0.0 if contract.outputs == "logits" else 0.5
        return tf.cast(outputs[:, 0] > threshold, tf.int64)
    return tf.argmax(outputs, axis=-1)


def _true_classes(targets: tf.Tensor, contract: ModelContract) -> tf.Tensor:
    if contract.labels == "one_hot":
        return tf.argmax(targets, axis=-1)
    if contract.binary:
        return tf.cast(targets[:, 0] > 0.5, tf.int64)
    return tf.cast(tf.reshape(targets, [-1]), tf.int64)


class ReplicatedFit:
    """`fit` for one worker of a `MultiWorkerMirroredStrategy` group (see the module docstring)."""

    def __init__(
        self,
        model: keras.Model,
        placement: Placement,
        contract: ModelContract,
    ) -> None:
        self.model = model
        self.strategy = placement.strategy
        self.contract = contract
        self.rank = placement.rank
        self.workers = placement.workers
        self.loss = per_example_loss(model)
        self.train_step = tf.function(self._train_step)
        self.sums = np.zeros(4)
        self.validation_step = tf.function(self._validation_step)

    def _sums(self, targets: tf.Tensor, outputs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The per-example losses and the number of right predictions."""
        losses = tf.cast(self.loss(targets, outputs), tf.float32)
        if losses.shape.rank and losses.shape.rank > 1:
            losses = tf.reduce_mean(losses, axis=list(range(1, losses.shape.rank)))
        predicted = _predicted_classes(outputs, self.contract)
        right = tf.reduce_sum(tf.cast(predicted == _true_classes(targets, self.contract), tf.int64))
        return losses, right

    def _train_step(self, images: tf.Tensor, targets: tf.Tensor) -> list[tf.Tensor]:
        rows = tf.shape(images)[0]
        first = rows * self.rank // self.workers
        last = rows * (self.rank + 1) // self.workers
        global_rows = tf.cast(rows, tf.float32)

        def replica_step(images: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, ...]:
            with tf.GradientTape() as tape:
                outputs = self.model(images, training=True)
                losses, right = self._sums(targets, outputs)
                penalty = tf.add_n([tf.constant(0.0), *self.model.losses])
                # Summed across workers by the optimizer: the gradient of the global batch's mean.
                loss = tf.reduce_sum(losses) / global_rows + penalty / self.workers
            variables = self.model.trainable_variables
            gradients = tape.gradient(loss, variables)
            self.model.optimizer.apply_gradients(zip(gradients, variables))
            # The penalty once per row, as Keras weighs a batch's loss by its rows.
            per_row = tf.cast(tf.shape(images)[0], tf.float32) * penalty
            return tf.reduce_sum(losses), tf.cast(right, tf.float32), per_row

        sums = self.strategy.run(replica_step, args=(images[first:last], targets[first:last]))
        return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

    def _validation_step(self, images: tf.Tensor, targets: tf.Tensor) -> list[tf.Tensor]:
        outputs = self.model(images, training=False)
        losses, right = self._sums(targets, outputs)
        return [tf.reduce_sum(losses), tf.cast(right, tf.float32)]

    def fit(
        self,
        batches: tf.data.Dataset,
        steps_per_epoch: int,
        epochs: int,
        initial_epoch: int,
        validation_data: tf.data.Dataset,
        callbacks: Sequence[keras.callbacks.Callback],
    ) -> None:
        """Train epochs `initial_epoch`..`epochs - 1`, `steps_per_epoch` batches each, calling
        `callbacks` as `fit` does (train, epoch and batch begin/end, with the same log names)."""
        hooks = keras.callbacks.CallbackList(
            list(callbacks), model=self.model, epochs=epochs, steps=steps_per_epoch
        )
        self.model.stop_training = False
        batch_iterator = iter(batches)
        hooks.on_train_begin()
        logs: dict[str, float] = {}
        for epoch in range(initial_epoch, epochs):
            self.sums = np.zeros(4)  # before the hooks: a resumed epoch's are restored in them
            hooks.on_epoch_begin(epoch)
            for step in range(steps_per_epoch):
                hooks.on_train_batch_begin(step)
                images, targets = next(batch_iterator)
                step_sums = [float(value) for value in self.train_step(images, targets)]
                self.sums += [*step_sums, images.shape[0]]
                loss_sum, right, penalty, rows = self.sums
                logs = {"loss": (loss_sum + penalty) / rows, "accuracy": right / rows}
                hooks.on_train_batch_end(step, logs)
                if self.model.stop_training:
                    break
            logs = {**logs, **self.evaluate(validation_data)}
            hooks.on_epoch_end(epoch, logs)
            if self.model.stop_training:
                break
        hooks.on_train_end(logs)

    def capture_sums(self) -> list:
        """The epoch's running sums (losses, right predictions, penalties, rows), which a resume
        checkpoint keeps so that a resumed epoch's logs average over all its batches."""
        return self.sums.tolist()

    def restore_sums(self, values: list) -> None:
        self.sums = np.array(values, dtype=np.float64)

    def evaluate(self, batches: tf.data.Dataset) -> dict[str, float]:
        """Validation loss (with the regularization penalty, as Keras reports it) and accuracy."""
        totals = np.zeros(2)
        rows = 0
        for images, targets in batches:
            totals += [float(value) for value in self.validation_step(images, targets)]
            rows += int(images.shape[0])
        penalty = float(tf.add_n([tf.constant(0.0), *self.model.losses]))
        return {"val_loss": totals[0] / rows + penalty, "val_accuracy": totals[1] / rows}
