"""Stage 2: train with ModelCheckpoint, EarlyStopping and resume checkpoints.

Training continues from the run's newest valid resume checkpoint, at the step after it, whether the
previous attempt was a Prefect retry in the same process or a killed process started again with the
same run name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
from prefect import task

from trainflow.checkpoints.state import ResumeState
from trainflow.checkpoints.store import load_latest_checkpoint
from trainflow.config import RunConfig
from trainflow.data.preparation import fingerprints_of_the_same_rows
from trainflow.errors import RunStateError
from trainflow.orchestration.artifact_keys import progress_key
from trainflow.orchestration.progress import ProgressArtifact
from trainflow.orchestration.retry_policy import RETRY_TRANSIENT_FAULTS
from trainflow.paths import RunPaths
from trainflow.results import PreparedData, TrainingResult
from trainflow.tracking.identity import TrackedRun
from trainflow.training.distributed.group import fit_in_workers
from trainflow.training.distributed.placement import distribution_of
from trainflow.training.pipeline import steps_per_epoch
from trainflow.training.session import fit_from

logger = logging.getLogger("trainflow.train")


def train_model(
    config: RunConfig,
    data: PreparedData,
    paths: RunPaths,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    on_commit: Callable[[ResumeState], None] | None = None,
) -> TrainingResult:
    """Train `config.model` on `data`, resuming from the newest valid checkpoint under `paths`;
    `extra_callbacks` join every epoch's callbacks (e.g. progress reporting), and `on_commit` is
    told of each checkpoint committed (e.g. to track its epochs)."""
    state = load_latest_checkpoint(paths)
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
        train = fit_in_workers if config.distributed else fit_from
        state = train(config, data, paths, state, extra_callbacks, on_commit)
    if state.best_checkpoint is None:
        raise RuntimeError(f"run {paths.name}: training ended without a best checkpoint")
    result = TrainingResult(
        recipe=config.recipe,
        image_shape=data.image_shape,
        num_classes=data.num_classes,
        class_names=data.class_names,
        data_fingerprint=data.fingerprint,
        epochs_completed=state.epochs_done,
        resumed_from=resumed_from,
        resumed_from_step=resumed_from_step,
        stopped_early=state.stopped_early,
        best_epoch=state.best_epoch,
        # By name: the state may have been written on another machine, or under another mirror.
        best_checkpoint=paths.storage.key(
            paths.best_checkpoints_dir / Path(state.best_checkpoint).name
        ),
        best_checkpoint_sha256=state.best_checkpoint_sha256,
        optimizer_iterations=state.global_step,
        history=state.history,
        epoch_ends_ms=state.epoch_ends_ms,
        steps_per_epoch=steps_per_epoch(data.rows["train"], config.batch_size),
        resumes=state.resumes,
        contract=state.contract,
        data_order=state.data_order,
        distribution=distribution_of(config),
    )
    paths.storage.write_json(paths.training_result, result.model_dump(mode="json"))
    return result


def _discard_stale_outputs(paths: RunPaths) -> None:
    """Without a checkpoint to resume from, training starts over: earlier best checkpoints and
    results of this run no longer belong to it."""
    for stale in (
        paths.best_checkpoints_dir,
        paths.model_dir,
        paths.stages_dir,
        paths.training_result,
        paths.evaluation,
    ):
        paths.storage.remove(stale)


def _check_resumable(
    state: ResumeState, config: RunConfig, data: PreparedData, paths: RunPaths
) -> None:
    # A run checkpointed before trainflow changed how prepared data is stored: the same rows.
    same_rows = fingerprints_of_the_same_rows(data.source_sha256, config.preparation)
    saved = {
        "model": state.model_kind,
        "optimizer": state.optimizer,
        "learning_rate": state.learning_rate,
        "data": state.data_fingerprint,
        "seed": state.seed,
        "batch_size": state.batch_size,
    }
    requested = {
        "model": config.model,
        "optimizer": config.optimizer,
        "learning_rate": config.learning_rate,
        "data": state.data_fingerprint if state.data_fingerprint in same_rows else data.fingerprint,
        "seed": config.seed,
        "batch_size": config.batch_size,
    }
    if saved != requested:
        differing = [name for name in saved if saved[name] != requested[name]]
        raise RunStateError(
            f"run {paths.name} has checkpoints of "
            + ", ".join(f"{name} {saved[name]}" for name in differing)
            + ", not "
            + ", ".join(f"{name} {requested[name]}" for name in differing)
            + "; resume it with its own --model, --optimizer, --learning-rate, --dataset, --seed "
            "and --batch-size, or pass --fresh or another --run-name"
        )


@task(name="train_model", retries=2, **RETRY_TRANSIENT_FAULTS)
def train_model_task(
    config: RunConfig, data: PreparedData, paths: RunPaths, tracked: TrackedRun | None = None
) -> TrainingResult:
    """Train, with the progress published as a Prefect artifact, and each epoch sent to the
    `tracked` MLflow run once its checkpoint is committed."""
    progress = ProgressArtifact(
        progress_key(paths.name), config.epochs, f"Training progress of trainflow run {paths.name}"
    )
    if tracked is None:
        return train_model(config, data, paths, extra_callbacks=[progress])
    from trainflow.tracking.epochs import EpochSender  # imports MLflow: only when tracking

    with EpochSender(tracked) as sender:
        return train_model(config, data, paths, [progress], on_commit=sender.send)
