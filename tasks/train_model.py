"""Stage 2: train with ModelCheckpoint, EarlyStopping and per-epoch resume checkpoints.

Training continues from the run's newest valid resume checkpoint, whether the previous attempt was
a Prefect retry in the same process or a killed process started again with the same run name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
from prefect import task
from pydantic import BaseModel

from tasks.prepare_data import PreparedData
from tasks.retry_policy import retry_unless_user_input_error
from trainflow.atomic import write_json
from trainflow.callbacks import (
    EpochLogger,
    FailAfterEpoch,
    ResumableEarlyStopping,
    ResumeCheckpoint,
)
from trainflow.checkpoints import EarlyStoppingState, ResumeState, latest_checkpoint
from trainflow.config import ModelKind, RunConfig
from trainflow.dataset import read_split
from trainflow.errors import RunStateError
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
    stopped_early: bool
    best_epoch: int
    best_checkpoint: Path
    optimizer_iterations: int
    history: dict[str, list[float]]


def train_model(config: RunConfig, data: PreparedData, paths: RunPaths) -> TrainingResult:
    """Train `config.model` on `data`, resuming from the newest checkpoint under `paths`."""
    state = latest_checkpoint(paths.resume_dir)
    resumed_from = None if state is None else state.epochs_done
    if state is not None:
        _check_resumable(state, config, data, paths)
    if state is not None and (state.stopped_early or state.epochs_done >= config.epochs):
        logger.info(
            "Training of run %s already finished after %d epochs", paths.name, state.epochs_done
        )
    else:
        state = _fit(config, data, paths, state)
    if state.best_checkpoint is None:
        raise RuntimeError(f"run {paths.name}: training ended without a best checkpoint")
    result = TrainingResult(
        model_kind=config.model,
        image_shape=data.image_shape,
        num_classes=data.num_classes,
        data_fingerprint=data.fingerprint,
        epochs_completed=state.epochs_done,
        resumed_from=resumed_from,
        stopped_early=state.stopped_early,
        best_epoch=state.best_epoch,
        best_checkpoint=Path(state.best_checkpoint),
        optimizer_iterations=state.optimizer_iterations,
        history=state.history,
    )
    write_json(paths.training_result, result.model_dump(mode="json"))
    return result


def _fit(
    config: RunConfig, data: PreparedData, paths: RunPaths, state: ResumeState | None
) -> ResumeState:
    """Run `fit` from `state` (None: from scratch) to `config.epochs`; return the final state."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    model = build_model(config.model, data.image_shape, data.num_classes)
    if state is None:
        state = ResumeState(
            epochs_done=0,
            optimizer_iterations=0,
            model_kind=config.model,
            data_fingerprint=data.fingerprint,
            weights_file="",
            weights_sha256="",
            history={},
            early_stopping=EarlyStoppingState(),
            best_val_loss=None,
            best_checkpoint=None,
            best_epoch=None,
            stopped_early=False,
        )
    else:
        model.load_weights(paths.resume_dir / state.weights_file)
        _check_optimizer_restored(model, state, paths)
        logger.info(
            "Resuming run %s from checkpoint %s: %d epochs done, optimizer at step %d",
            paths.name,
            state.weights_file,
            state.epochs_done,
            state.optimizer_iterations,
        )

    paths.best_checkpoints_dir.mkdir(parents=True, exist_ok=True)
    best_checkpoint = keras.callbacks.ModelCheckpoint(
        str(paths.best_checkpoint_pattern),
        monitor="val_loss",
        save_best_only=True,
        save_weights_only=True,
        initial_value_threshold=state.best_val_loss,
    )
    early_stopping = ResumableEarlyStopping(
        state.early_stopping, monitor="val_loss", patience=config.patience
    )
    resume_checkpoint = ResumeCheckpoint(paths.resume_dir, state, best_checkpoint, early_stopping)
    callbacks = [best_checkpoint, early_stopping, resume_checkpoint, EpochLogger(config.epochs)]
    if config.fail_at_epoch is not None:
        callbacks.append(FailAfterEpoch(config.fail_at_epoch))
    model.fit(
        *read_split(data.paths.split("train")),
        batch_size=config.batch_size,
        epochs=config.epochs,
        initial_epoch=state.epochs_done,
        validation_data=read_split(data.paths.split("validation")),
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    return resume_checkpoint.state


def _check_resumable(
    state: ResumeState, config: RunConfig, data: PreparedData, paths: RunPaths
) -> None:
    if state.model_kind != config.model or state.data_fingerprint != data.fingerprint:
        raise RunStateError(
            f"run {paths.name} has checkpoints of model {state.model_kind} on data "
            f"{state.data_fingerprint}, not {config.model} on {data.fingerprint}; resume it with "
            "its own --model and --dataset, or pass --fresh or another --run-name"
        )


def _check_optimizer_restored(model: keras.Model, state: ResumeState, paths: RunPaths) -> None:
    iterations = int(model.optimizer.iterations.numpy())
    if iterations != state.optimizer_iterations:
        raise RuntimeError(
            f"run {paths.name}: optimizer restored at step {iterations}, checkpoint says "
            f"{state.optimizer_iterations}; the checkpoint {state.weights_file} is inconsistent"
        )


train_model_task = task(
    train_model,
    name="train_model",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_unless_user_input_error,
)
