"""Callbacks that make `fit` resumable at the step: early stopping with saved state, and the
resume checkpoints committed at epoch ends and every N steps."""

from __future__ import annotations

import time
from typing import Protocol

import keras

from trainflow.checkpoints.model_state import (
    capture_metrics_state,
    capture_random_state,
    restore_metrics_state,
)
from trainflow.checkpoints.state import EarlyStoppingState, ResumeState
from trainflow.checkpoints.writer import CheckpointWriter


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


class MetricSums(Protocol):
    """Running sums of a training loop's metrics kept outside the model (`ReplicatedFit`'s)."""

    def capture_sums(self) -> list: ...

    def restore_sums(self, values: list) -> None: ...


class ResumeCheckpoint(keras.callbacks.Callback):
    """Track the training state of a `fit` and commit it, through `writer`, as a resume checkpoint
    at the end of every epoch.

    At the start of an epoch resumed mid-way it restores the running metric sums, so the epoch's
    loss and accuracy average over all its batches, as without the interruption. Goes after
    `ModelCheckpoint` and `EarlyStopping` in the callback list, so that the state it commits at the
    epoch's end includes their decisions.

    It has no per-batch hook: `StepCheckpoint` adds one when step checkpoints are on. The sums are
    the model's metric variables (`fit`'s), or those of `metric_sums` where a loop of ours keeps
    them.
    """

    def __init__(
        self,
        writer: CheckpointWriter,
        state: ResumeState,
        best_checkpoint: keras.callbacks.ModelCheckpoint,
        early_stopping: ResumableEarlyStopping,
        metric_sums: MetricSums | None = None,
    ) -> None:
        super().__init__()
        self.writer = writer
        self.state = state
        self.best_checkpoint = best_checkpoint
        self.early_stopping = early_stopping
        self.metric_sums = metric_sums

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if not self.state.step_in_epoch:
            return
        if self.metric_sums is None:
            restore_metrics_state(self.model, self.state.metrics_state)
        else:
            self.metric_sums.restore_sums(self.state.metrics_state)

    def _metrics_state(self) -> list:
        if self.metric_sums is None:
            return capture_metrics_state(self.model)
        return self.metric_sums.capture_sums()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        history = {key: [*values] for key, values in self.state.history.items()}
        for key, value in (logs or {}).items():
            history.setdefault(key, []).append(float(value))
        update = {}
        best_val_loss = self.best_checkpoint.best
        if best_val_loss is not None and best_val_loss != self.state.best_val_loss:
            # ModelCheckpoint wrote this epoch's file (its names count epochs from 1). The writer
            # hashes it and uploads it, before the manifest that names it, off this thread.
            update = {
                "best_val_loss": float(best_val_loss),
                "best_checkpoint": str(self.best_checkpoint.filepath).format(epoch=epoch + 1),
                "best_checkpoint_sha256": None,
                "best_epoch": epoch + 1,
            }
        self._commit(
            global_step=int(self.model.optimizer.iterations.numpy()),
            epochs_done=epoch + 1,
            step_in_epoch=0,
            metrics_state=[],
            history=history,
            epoch_ends_ms=[*self.state.epoch_ends_ms, int(time.time() * 1000)],
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
                metrics_state=self._metrics_state(),
            )
