"""Callbacks that show and record how training goes: log lines, terminal progress, TensorBoard
scalars, and the stop on a non-finite loss."""

from __future__ import annotations

import logging
import math
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import keras
import tensorflow as tf

from trainflow.errors import NonFiniteLossError
from trainflow.storage.artifacts import Storage

logger = logging.getLogger("trainflow.train")


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise `NonFiniteLossError` after the first batch whose loss is NaN or infinite: the resume
    checkpoints before it stay, and no diverged model reaches persist or promotion.

    Keras may run its batch hook in the background (`async_safe`); the error then surfaces on the
    training thread a batch or two later, and always before the epoch's end is committed.
    """

    async_safe = True  # it only reads the logs it is given

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"training diverged: the loss became {float(loss)} in epoch {self.epoch}; nothing "
                "was persisted. Check the dataset for extreme or mislabelled values, or start over "
                "(--fresh) with another --seed or --batch-size"
            )


class FirstResumedStep(keras.callbacks.Callback):
    """Log once when the first step after a resume has finished: the moment training is back
    where it was (the recovery benchmark times restarts by this line)."""

    MESSAGE = "First step after the resume done (global step %d)"

    def __init__(self, global_step: int) -> None:
        super().__init__()
        self.global_step = global_step
        self.logged = False

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        # Batch 1 begins once batch 0, the first resumed step, has run.
        if batch >= 1:
            self._log()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self._log()  # an epoch resumed at its last step has no batch 1

    def _log(self) -> None:
        if not self.logged:
            self.logged = True
            logger.info(self.MESSAGE, self.global_step + 1)


class EpochSummaries(keras.callbacks.Callback):
    """TensorBoard scalars at the end of every epoch, under `train/` and `validation/` with Keras's
    names (`epoch_loss`, `epoch_accuracy`, ...).

    Used instead of `keras.callbacks.TensorBoard`, which writes a summary of every batch even with
    `update_freq="epoch"`: a per-batch cost that the epoch curves do not need.

    Under an artifacts root in an object store the logs are written locally and uploaded after
    every epoch, by a thread of their own so that training does not wait for the store (the next
    epoch's summaries wait for the previous upload, so a file is never written while it is read).
    `tf.io.gfile` reads `s3://` only with the tensorflow-io plugin, which this project does not
    install: `tensorboard --logdir s3://…` needs that plugin, or a local copy.
    """

    def __init__(self, storage: Storage, log_dir: Path) -> None:
        super().__init__()
        self.storage = storage
        self.log_dir = log_dir
        self.writers: dict[str, tf.summary.SummaryWriter] = {}
        self.uploader: ThreadPoolExecutor | None = None
        self.upload: Future | None = None

    def on_train_begin(self, logs=None) -> None:
        self.writers = {
            part: tf.summary.create_file_writer(str(self.log_dir / part))
            for part in ("train", "validation")
        }
        if self.storage.is_remote:
            self.uploader = ThreadPoolExecutor(1, thread_name_prefix="trainflow-tensorboard")

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self._wait_for_upload()
        for key, value in (logs or {}).items():
            part, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self.writers[part].as_default():
                tf.summary.scalar(f"epoch_{name}", float(value), step=epoch)
        if self.uploader is not None:
            for writer in self.writers.values():
                writer.flush()
            self.upload = self.uploader.submit(self.storage.commit, self.log_dir)

    def on_train_end(self, logs=None) -> None:
        self._wait_for_upload()
        for writer in self.writers.values():
            writer.close()
        if self.uploader is not None:
            self.uploader.shutdown()
            self.uploader = None
        self.storage.commit(self.log_dir)

    def _wait_for_upload(self) -> None:
        upload, self.upload = self.upload, None
        if upload is not None:
            upload.result()  # its error, if any, is the run's


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch (Keras's own progress bar writes to stdout, which `--json` keeps clean)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        metrics = " ".join(f"{key}={value:.4f}" for key, value in sorted((logs or {}).items()))
        logger.info("Epoch %d/%d: %s", epoch + 1, self.epochs, metrics)


class TerminalProgress(keras.callbacks.Callback):
    """A one-line progress display (epoch, step, loss) for an interactive terminal. Add it only when
    stderr is a terminal: elsewhere (CI, workers) `EpochLogger`'s lines suffice."""

    REFRESH_SECONDS = 0.25
    async_safe = True  # it only reads the logs it is given

    def __init__(self, epochs: int, steps_per_epoch: int, first_step: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.first_step = first_step
        self.epoch = 0
        self.shown_at = 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        now = time.monotonic()
        if now - self.shown_at >= self.REFRESH_SECONDS:
            self.shown_at = now
            loss = (logs or {}).get("loss")
            loss_text = "" if loss is None else f"  loss {float(loss):.4f}"
            sys.stderr.write(
                f"\r  epoch {self.epoch}/{self.epochs}  step {self.first_step + batch + 1}/"
                f"{self.steps_per_epoch}{loss_text}   "
            )
            sys.stderr.flush()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.first_step = 0  # only the first epoch of a resumed run starts part-way
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
