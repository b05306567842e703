"""Stage 2: train with ModelCheckpoint, EarlyStopping and resume checkpoints.

Training continues from the run's newest valid resume checkpoint, at the step after it, whether the
previous attempt was a Prefect retry in the same process or a killed process started again with the
same run name.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from prefect import task
from pydantic import BaseModel

from tasks.prepare_data import PreparedData
from tasks.retry_policy import retry_unless_user_input_error
from trainflow.artifact_keys import progress_key
from trainflow.atomic import write_json
from trainflow.callbacks import (
    EpochLogger,
    EpochSummaries,
    FailAfterEpoch,
    FirstResumedStep,
    KillAtStep,
    ProgressArtifact,
    ResumableEarlyStopping,
    ResumeCheckpoint,
    StepCheckpoint,
    StopOnNonFiniteLoss,
    TerminalProgress,
)
from trainflow.checkpoints import (
    CheckpointWriter,
    ResumePoint,
    ResumeState,
    load_latest_checkpoint,
    restore_random_state,
)
from trainflow.config import ModelKind, RunConfig
from trainflow.dataset import read_split
from trainflow.errors import RunStateError, as_storage_error
from trainflow.models import build_model
from trainflow.paths import RunPaths

logger = logging.getLogger("trainflow.train")


class TrainingResult(BaseModel):
    """What training produced: numbers and paths, never Keras objects."""

    model_kind: ModelKind
    image_shape: tuple[int, int]
    num_classes: int
    data_fingerprint: str
    epochs_completed: int
    resumed_from: int | None
    resumed_from_step: int | None
    stopped_early: bool
    best_epoch: int
    best_checkpoint: Path
    best_checkpoint_sha256: str | None
    optimizer_iterations: int
    history: dict[str, list[float]]
    steps_per_epoch: int
    resumes: list[ResumePoint]

    @property
    def model_identity(self) -> dict:
        """What identifies the trained model, however training got there (resumed or not)."""
        return self.model_dump(
            mode="json", exclude={"resumed_from", "resumed_from_step", "resumes"}
        )


def train_model(
    config: RunConfig,
    data: PreparedData,
    paths: RunPaths,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainingResult:
    """Train `config.model` on `data`, resuming from the newest valid checkpoint under `paths`;
    `extra_callbacks` join every epoch's callbacks (e.g. progress reporting)."""
    state = load_latest_checkpoint(paths.resume_dir, paths.quarantine_dir)
    if state is None:
        _discard_stale_outputs(paths)
        resumed_from = resumed_from_step = None
    else:
        _check_resumable(state, config, data, paths)
        resumed_from, resumed_from_step = state.epochs_done, state.global_step
    if state is not None and (state.stopped_early or state.epochs_done >= config.epochs):
        logger.info(
            "Training of run %s already finished after %d epochs", paths.name, state.epochs_done
        )
    else:
        state = _fit(config, data, paths, state, extra_callbacks)
    if state.best_checkpoint is None:
        raise RuntimeError(f"run {paths.name}: training ended without a best checkpoint")
    result = TrainingResult(
        model_kind=config.model,
        image_shape=data.image_shape,
        num_classes=data.num_classes,
        data_fingerprint=data.fingerprint,
        epochs_completed=state.epochs_done,
        resumed_from=resumed_from,
        resumed_from_step=resumed_from_step,
        stopped_early=state.stopped_early,
        best_epoch=state.best_epoch,
        best_checkpoint=Path(state.best_checkpoint),
        best_checkpoint_sha256=state.best_checkpoint_sha256,
        optimizer_iterations=state.global_step,
        history=state.history,
        steps_per_epoch=steps_per_epoch(data.rows["train"], config.batch_size),
        resumes=state.resumes,
    )
    write_json(paths.training_result, result.model_dump(mode="json"))
    return result


def steps_per_epoch(train_rows: int, batch_size: int) -> int:
    """Training steps in one epoch (the last batch may be smaller)."""
    return math.ceil(train_rows / batch_size)


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The order of the training examples in `epoch`: a pure function of seed and epoch, so that a
    resumed run feeds exactly the batches the interrupted one would have."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def _fit(
    config: RunConfig,
    data: PreparedData,
    paths: RunPaths,
    state: ResumeState | None,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> ResumeState:
    """Train from `state` (None: from scratch) to `config.epochs`: one `fit` call for all epochs,
    after one for the rest of an epoch interrupted part-way."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    model = build_model(config.model, data.image_shape, data.num_classes)
    state = _starting_state(model, config, data, paths, state)
    images, labels = read_split(data.paths.split("train"))
    validation = read_split(data.paths.split("validation"))
    steps_in_epoch = steps_per_epoch(len(labels), config.batch_size)
    paths.best_checkpoints_dir.mkdir(parents=True, exist_ok=True)
    # Resume checkpoints are written in a background thread, in the file layout that a throwaway
    # model of the same architecture shows.
    layout_model = build_model(config.model, data.image_shape, data.num_classes)
    writer = CheckpointWriter(model, layout_model, paths.resume_dir, config.keep_checkpoints)
    try:
        while state.epochs_done < config.epochs and not state.stopped_early:
            # A part-way epoch is a `fit` of its own: Keras's epochs all have the same step count.
            last_epoch = state.epochs_done + 1 if state.step_in_epoch else config.epochs
            callbacks = _callbacks(config, paths, state, steps_in_epoch, writer, extra_callbacks)
            try:
                model.fit(
                    training_batches(
                        images,
                        labels,
                        config.seed,
                        range(state.epochs_done, last_epoch),
                        config.batch_size,
                        skip_steps=state.step_in_epoch,
                    ),
                    steps_per_epoch=steps_in_epoch - state.step_in_epoch,
                    epochs=last_epoch,
                    initial_epoch=state.epochs_done,
                    validation_data=validation,
                    shuffle=False,  # the batches come in each epoch's own order
                    callbacks=callbacks,
                    verbose=0,
                )
            except OSError as error:  # ModelCheckpoint writes its files itself
                raise as_storage_error(error, paths.best_checkpoints_dir) or error from error
            state = next(c for c in callbacks if isinstance(c, ResumeCheckpoint)).state
    finally:
        committed = writer.close()  # an interrupted run's last checkpoint must land before it ends
    return committed or state


def _starting_state(
    model: keras.Model,
    config: RunConfig,
    data: PreparedData,
    paths: RunPaths,
    state: ResumeState | None,
) -> ResumeState:
    """A fresh state, or `state` restored into `model` (weights, optimizer, random state) and
    recorded as a resume point."""
    if state is None:
        return ResumeState(
            model_kind=config.model,
            data_fingerprint=data.fingerprint,
            seed=config.seed,
            batch_size=config.batch_size,
        )
    model.load_weights(paths.resume_dir / state.weights_file)
    restore_random_state(model, state.seed_generator_states)
    _check_optimizer_restored(model, state, paths)
    resume = ResumePoint(
        epochs_done=state.epochs_done,
        step_in_epoch=state.step_in_epoch,
        global_step=state.global_step,
    )
    logger.info(
        "Resuming run %s from checkpoint %s: epoch %d, step %d of the epoch, global step %d",
        paths.name,
        state.weights_file,
        state.epochs_done + 1,
        state.step_in_epoch,
        state.global_step,
    )
    return state.model_copy(update={"resumes": [*state.resumes, resume]})


def training_batches(
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    epochs: range,
    batch_size: int,
    skip_steps: int = 0,
) -> tf.data.Dataset:
    """The training batches of `epochs`, each epoch in its `epoch_order`, without the first
    `skip_steps` batches (those a resumed run has trained already)."""
    orders = np.stack([epoch_order(seed, epoch, len(labels)) for epoch in epochs])
    images, labels = tf.constant(images), tf.constant(labels)

    # Plain graph code: nothing for AutoGraph to convert (and its source lookup fails on lambdas).
    @tf.autograph.experimental.do_not_convert
    def batches_of(order: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    @tf.autograph.experimental.do_not_convert
    def examples(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(images, batch), tf.gather(labels, batch)

    return (
        tf.data.Dataset.from_tensor_slices(orders)
        .flat_map(batches_of)
        .skip(skip_steps)
        .map(examples)
        .prefetch(tf.data.AUTOTUNE)
    )


def checkpoint_callbacks(
    paths: RunPaths,
    state: ResumeState,
    writer: CheckpointWriter,
    patience: int,
    checkpoint_every: int | None,
) -> tuple[keras.callbacks.ModelCheckpoint, ResumableEarlyStopping, ResumeCheckpoint]:
    """`ModelCheckpoint` (best val_loss), `EarlyStopping` and the resume checkpoints (every epoch,
    and every `checkpoint_every` steps if set), starting from `state`, in the order they must run."""
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
        resume_checkpoint = ResumeCheckpoint(writer, state, best_checkpoint, early_stopping)
    else:
        resume_checkpoint = StepCheckpoint(
            writer, state, best_checkpoint, early_stopping, every=checkpoint_every
        )
    return best_checkpoint, early_stopping, resume_checkpoint


def _callbacks(
    config: RunConfig,
    paths: RunPaths,
    state: ResumeState,
    steps_in_epoch: int,
    writer: CheckpointWriter,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> list[keras.callbacks.Callback]:
    """The callbacks of one `fit`, starting from `state`; per-batch work only where asked for."""
    callbacks = [
        StopOnNonFiniteLoss(),  # first: a diverged batch must not be checkpointed
        *checkpoint_callbacks(paths, state, writer, config.patience, config.checkpoint_every),
        EpochLogger(config.epochs),
        EpochSummaries(paths.tensorboard_dir),
        *extra_callbacks,
    ]
    if state.resumes and state.resumes[-1].global_step == state.global_step:
        callbacks.append(FirstResumedStep(state.global_step))  # this fit is the resumed one
    if sys.stderr.isatty():
        callbacks.append(TerminalProgress(config.epochs, steps_in_epoch, state.step_in_epoch))
    if config.fail_at_epoch is not None:
        callbacks.append(FailAfterEpoch(config.fail_at_epoch))
    if config.kill_at_step is not None:
        marker = paths.kill_marker(config.kill_at_step)
        callbacks.append(KillAtStep(config.kill_at_step, marker, writer))
    return callbacks


def _discard_stale_outputs(paths: RunPaths) -> None:
    """Without a checkpoint to resume from, training starts over: earlier best checkpoints and
    results of this run no longer belong to it."""
    for stale in (paths.best_checkpoints_dir, paths.model_dir, paths.stages_dir):
        if stale.exists():
            shutil.rmtree(stale)
    for stale in (paths.training_result, paths.evaluation):
        stale.unlink(missing_ok=True)


def _check_resumable(
    state: ResumeState, config: RunConfig, data: PreparedData, paths: RunPaths
) -> None:
    saved = (state.model_kind, state.data_fingerprint, state.seed, state.batch_size)
    requested = (config.model, data.fingerprint, config.seed, config.batch_size)
    if saved != requested:
        raise RunStateError(
            f"run {paths.name} has checkpoints of model {state.model_kind} on data "
            f"{state.data_fingerprint} with seed {state.seed} and batch size {state.batch_size}, "
            f"not {config.model} on {data.fingerprint} with seed {config.seed} and batch size "
            f"{config.batch_size}; resume it with its own --model, --dataset, --seed and "
            "--batch-size, or pass --fresh or another --run-name"
        )


def _check_optimizer_restored(model: keras.Model, state: ResumeState, paths: RunPaths) -> None:
    iterations = int(model.optimizer.iterations.numpy())
    if iterations != state.global_step:
        raise RuntimeError(
            f"run {paths.name}: optimizer restored at step {iterations}, checkpoint says "
            f"{state.global_step}; the checkpoint {state.weights_file} is inconsistent"
        )


@task(
    name="train_model",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_unless_user_input_error,
)
def train_model_task(config: RunConfig, data: PreparedData, paths: RunPaths) -> TrainingResult:
    """Train, with the progress published as a Prefect artifact."""
    progress = ProgressArtifact(
        progress_key(paths.name), config.epochs, f"Training progress of trainflow run {paths.name}"
    )
    return train_model(config, data, paths, extra_callbacks=[progress])
