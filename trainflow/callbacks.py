"""Keras callbacks that make `fit` resumable at the step: saved state, logging, fault injection."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf

from trainflow.atomic import write_json
from trainflow.checkpoints import (
    CheckpointWriter,
    EarlyStoppingState,
    ResumeState,
    capture_metrics_state,
    capture_random_state,
    restore_metrics_state,
)
from trainflow.dataset import sha256_of_files
from trainflow.errors import NonFiniteLossError

logger = logging.getLogger("trainflow.train")


class InjectedFailure(RuntimeError):
    """Raised on purpose by `FailAfterEpoch` to demonstrate retry and resume."""


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` that starts from saved state instead of resetting its patience on resume."""

    def __init__(self, initial_state: EarlyStoppingState, **kwargs) -> None:
        super().__init__(**kwargs)
        self.initial_state = initial_state

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        self.wait = self.initial_state.wait
        self.best = self.initial_state.best
        self.best_epoch = self.initial_state.best_epoch

    def state(self) -> EarlyStoppingState:
        best = None if self.best is None else float(self.best)
        return EarlyStoppingState(wait=self.wait, best=best, best_epoch=self.best_epoch)


class ResumeCheckpoint(keras.callbacks.Callback):
    """Track the training state of a `fit` and commit it, through `writer`, as a resume checkpoint
    at the end of every epoch.

    At the start of an epoch resumed mid-way it restores the running metric sums, so the epoch's
    loss and accuracy average over all its batches, as without the interruption. Goes after
    `ModelCheckpoint` and `EarlyStopping` in the callback list, so that the state it commits at the
    epoch's end includes their decisions.

    It has no per-batch hook: `StepCheckpoint` adds one when step checkpoints are on.
    """

    def __init__(
        self,
        writer: CheckpointWriter,
        state: ResumeState,
        best_checkpoint: keras.callbacks.ModelCheckpoint,
        early_stopping: ResumableEarlyStopping,
    ) -> None:
        super().__init__()
        self.writer = writer
        self.state = state
        self.best_checkpoint = best_checkpoint
        self.early_stopping = early_stopping

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if self.state.step_in_epoch:
            restore_metrics_state(self.model, self.state.metrics_state)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        history = {key: [*values] for key, values in self.state.history.items()}
        for key, value in (logs or {}).items():
            history.setdefault(key, []).append(float(value))
        update = {}
        best_val_loss = self.best_checkpoint.best
        if best_val_loss is not None and best_val_loss != self.state.best_val_loss:
            # ModelCheckpoint wrote this epoch's file (its names count epochs from 1).
            best_path = str(self.best_checkpoint.filepath).format(epoch=epoch + 1)
            update = {
                "best_val_loss": float(best_val_loss),
                "best_checkpoint": best_path,
                "best_checkpoint_sha256": sha256_of_files([Path(best_path)]),
                "best_epoch": epoch + 1,
            }
        self._commit(
            global_step=int(self.model.optimizer.iterations.numpy()),
            epochs_done=epoch + 1,
            step_in_epoch=0,
            metrics_state=[],
            history=history,
            early_stopping=self.early_stopping.state(),
            stopped_early=bool(self.model.stop_training),
            **update,
        )

    def _commit(self, **update) -> None:
        self.state = self.state.model_copy(
            update={"seed_generator_states": capture_random_state(self.model), **update}
        )
        self.writer.commit(self.state)


class StepCheckpoint(ResumeCheckpoint):
    """`ResumeCheckpoint` that also commits every `every` global steps within an epoch.

    It commits when the next batch begins, not when a batch ends: the begin hook runs on the
    training thread with the variables exactly as the finished steps left them, and unlike an end
    hook it does not stop Keras from running the other callbacks' batch-end work in the background.
    """

    def __init__(self, *args, every: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.every = every
        self.epoch_first_step = self.epoch_first_global_step = 0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        super().on_epoch_begin(epoch, logs)
        self.epoch_first_step = self.state.step_in_epoch
        self.epoch_first_global_step = self.state.global_step

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        # `batch` steps of this fit's epoch have run (batch 0: the state the epoch began with; the
        # epoch's last step is committed by the epoch's end, with the epoch's results).
        global_step = self.epoch_first_global_step + batch
        if batch and global_step % self.every == 0:
            self._commit(
                global_step=global_step,
                step_in_epoch=self.epoch_first_step + batch,
                metrics_state=capture_metrics_state(self.model),
            )


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
    """

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self.log_dir = log_dir
        self.writers: dict[str, tf.summary.SummaryWriter] = {}

    def on_train_begin(self, logs=None) -> None:
        self.writers = {
            part: tf.summary.create_file_writer(str(self.log_dir / part))
            for part in ("train", "validation")
        }

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        for key, value in (logs or {}).items():
            part, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self.writers[part].as_default():
                tf.summary.scalar(f"epoch_{name}", float(value), step=epoch)

    def on_train_end(self, logs=None) -> None:
        for writer in self.writers.values():
            writer.close()


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch (Keras's own progress bar writes to stdout, which `--json` keeps clean)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        metrics = " ".join(f"{key}={value:.4f}" for key, value in sorted((logs or {}).items()))
        logger.info("Epoch %d/%d: %s", epoch + 1, self.epochs, metrics)


class FailAfterEpoch(keras.callbacks.Callback):
    """Raise `InjectedFailure` right after epoch `epoch` (1-based) has been checkpointed.

    Goes last in the callback list. A resumed run starts after that epoch, so it never fails again.
    """

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if epoch + 1 == self.epoch:
            raise InjectedFailure(f"injected failure after epoch {self.epoch} (--fail-at-epoch)")


class KillAtStep(keras.callbacks.Callback):
    """SIGKILL this process right after global step `step`, once the checkpoints committed up to
    it are on disk, and only once per run: a marker file records that it happened, so the resumed
    run, which may train that step again, goes on. (Kills in the middle of a checkpoint write are
    the crash harness's: tests/test_crash_anywhere.py.)"""

    def __init__(self, step: int, marker: Path, writer: CheckpointWriter) -> None:
        super().__init__()
        self.step = step
        self.marker = marker
        self.writer = writer

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        # Before the next step: after `StepCheckpoint` has committed the finished ones.
        if int(self.model.optimizer.iterations.numpy()) == self.step and not self.marker.exists():
            self.writer.flush()
            write_json(self.marker, {"killed_at_step": self.step, "pid": os.getpid()})
            logger.warning("Killing the training process at step %d (--kill-at-step)", self.step)
            os.kill(os.getpid(), signal.SIGKILL)


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


class ProgressArtifact(keras.callbacks.Callback):
    """Training progress as a Prefect progress artifact, updated at the end of every epoch.
    Create it inside a Prefect task run."""

    def __init__(self, key: str, epochs: int, description: str) -> None:
        from prefect.artifacts import create_progress_artifact

        super().__init__()
        self.epochs = epochs
        self.artifact_id = create_progress_artifact(0.0, key=key, description=description)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self.artifact_id, progress=100.0 * (epoch + 1) / self.epochs)
