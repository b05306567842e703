"""The checkpointing callbacks of a `fit`, built in one place for training and the benchmarks."""

from __future__ import annotations

import keras

from trainflow.checkpoints.state import ResumeState
from trainflow.checkpoints.writer import CheckpointWriter
from trainflow.paths import RunPaths
from trainflow.training.callbacks.resume import (
    MetricSums,
    ResumableEarlyStopping,
    ResumeCheckpoint,
    StepCheckpoint,
)


def checkpoint_callbacks(
    paths: RunPaths,
    state: ResumeState,
    writer: CheckpointWriter,
    patience: int,
    checkpoint_every: int | None,
    metric_sums: MetricSums | None = None,
) -> tuple[keras.callbacks.ModelCheckpoint, ResumableEarlyStopping, ResumeCheckpoint]:
    """`ModelCheckpoint` (best val_loss), `EarlyStopping` and the resume checkpoints (every epoch,
    and every `checkpoint_every` steps if set), starting from `state`, in the order they must run;
    `metric_sums`: where the training loop keeps its running sums, if not in the model."""
    best_checkpoint = keras.callbacks.ModelCheckpoint(
        str(paths.best_checkpoint_pattern),
        monitor="val_loss",
        save_best_only=True,
        save_weights_only=True,
        initial_value_threshold=state.best_val_loss,
    )
    # Saving per epoch, its batch hook does nothing: let Keras run batch hooks in the background.
    best_checkpoint.async_safe = True
    early_stopping = ResumableEarlyStopping(
        state.early_stopping, monitor="val_loss", patience=patience
    )
    if checkpoint_every is None:
        resume_checkpoint = ResumeCheckpoint(
            writer, state, best_checkpoint, early_stopping, metric_sums
        )
    else:
        resume_checkpoint = StepCheckpoint(
            writer, state, best_checkpoint, early_stopping, metric_sums, every=checkpoint_every
        )
    return best_checkpoint, early_stopping, resume_checkpoint
