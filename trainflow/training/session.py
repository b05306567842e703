"""A resumable training session: build the model, restore a checkpoint's state into it, and `fit`
with the checkpointing, monitoring and fault callbacks until the last epoch."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from trainflow.checkpoints.model_state import restore_random_state
from trainflow.checkpoints.state import ResumePoint, ResumeState
from trainflow.checkpoints.writer import CheckpointWriter
from trainflow.config import RunConfig
from trainflow.contract import ModelContract
from trainflow.errors import RunStateError, as_storage_error
from trainflow.paths import RunPaths
from trainflow.results import PreparedData
from trainflow.training.callbacks.checkpointing import checkpoint_callbacks
from trainflow.training.callbacks.faults import FailAfterEpoch, KillAtStep
from trainflow.training.callbacks.monitoring import (
    EpochLogger,
    EpochSummaries,
    FirstResumedStep,
    StopOnNonFiniteLoss,
    TerminalProgress,
)
from trainflow.training.callbacks.resume import MetricSums, ResumeCheckpoint
from trainflow.training.distributed.loop import ReplicatedFit
from trainflow.training.distributed.placement import Placement
from trainflow.training.distributed.relay import RelayedCheckpointWriter
from trainflow.training.inputs import training_input
from trainflow.training.models import build_classifier, build_model
from trainflow.training.pipeline import steps_per_epoch
from trainflow.training.seeding import private_default_seeds

logger = logging.getLogger("trainflow.train")


def fit_from(
    config: RunConfig,
    data: PreparedData,
    paths: RunPaths,
    state: ResumeState | None,
    extra_callbacks: Sequence[keras.callbacks.Callback],
    on_commit: Callable[[ResumeState], None] | None = None,
    placement: Placement = Placement(),
) -> ResumeState:
    """Train from `state` (None: from scratch) to `config.epochs`: one `fit` call for all epochs,
    after one for the rest of an epoch interrupted part-way; `on_commit` is told of each resume
    checkpoint committed (see `CheckpointWriter`). In a worker process (`placement`), the model is
    built in its strategy's scope, the process writes only to its scratch copy of the run, and
    the chief's checkpoints are committed by the driver."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    with placement.scope(), private_default_seeds(config.seed):
        model, contract = build_classifier(
            config.recipe, data.image_shape, data.num_classes, config.pixels
        )
        state = _starting_state(model, contract, config, data, paths, state)
    own_loop = ReplicatedFit(model, placement, contract) if placement.own_loop else None
    # The batches come in each epoch's own order: `fit` must not shuffle them.
    run_fit = own_loop.fit if own_loop else functools.partial(model.fit, shuffle=False, verbose=0)
    run_paths, paths = paths, placement.written or paths
    inputs = training_input(
        data,
        contract,
        config.data_input,
        config.memory_budget_bytes,
        resumed_order=state.data_order if state.resumes else None,
    )
    state = state.model_copy(update={"data_order": inputs.order})
    validation = inputs.validation_batches(config.batch_size)
    steps_in_epoch = steps_per_epoch(inputs.train.rows, config.batch_size)
    paths.best_checkpoints_dir.mkdir(parents=True, exist_ok=True)
    # Resume checkpoints are written in a background thread, in the file layout that a throwaway
    # model of the same architecture shows.
    layout_model = build_model(config.recipe, data.image_shape, data.num_classes)
    if placement.link is not None and placement.chief:  # the driver commits for it
        writer = RelayedCheckpointWriter(
            model, layout_model, paths, config.keep_checkpoints, placement.link
        )
    else:
        writer = CheckpointWriter(model, layout_model, paths, config.keep_checkpoints, on_commit)
    try:
        while state.epochs_done < config.epochs and not state.stopped_early:
            # A part-way epoch is a `fit` of its own: Keras's epochs all have the same step count.
            last_epoch = state.epochs_done + 1 if state.step_in_epoch else config.epochs
            callbacks = _callbacks(
                config, paths, state, steps_in_epoch, writer, extra_callbacks, own_loop
            )
            if config.kill_at_step is not None and placement.rank == placement.workers - 1:
                # In a group, the last worker dies: the one worker process whose death is shown.
                callbacks.append(_kill_at_step(config.kill_at_step, run_paths, writer, placement))
            try:
                run_fit(
                    inputs.training_batches(
                        config.seed,
                        range(state.epochs_done, last_epoch),
                        config.batch_size,
                        skip_steps=state.step_in_epoch,
                    ),
                    steps_per_epoch=steps_in_epoch - state.step_in_epoch,
                    epochs=last_epoch,
                    initial_epoch=state.epochs_done,
                    validation_data=validation,
                    callbacks=callbacks,
                )
            except OSError as error:  # ModelCheckpoint writes its files itself
                raise as_storage_error(error, paths.best_checkpoints_dir) or error from error
            state = next(c for c in callbacks if isinstance(c, ResumeCheckpoint)).state
    finally:
        committed = writer.close()  # an interrupted run's last checkpoint must land before it ends
    return committed or state


def _starting_state(
    model: keras.Model,
    contract: ModelContract,
    config: RunConfig,
    data: PreparedData,
    paths: RunPaths,
    state: ResumeState | None,
) -> ResumeState:
    """A fresh state, or `state` restored into `model` (weights, optimizer, random state) and
    recorded as a resume point."""
    chosen = "chosen" if config.pixels is None else "given"
    logger.info("Model %s: %s (pixel range %s)", config.model, contract.describe(), chosen)
    if state is None:
        return ResumeState(
            model_kind=config.model,
            contract=contract,
            optimizer=config.optimizer,
            learning_rate=config.learning_rate,
            data_fingerprint=data.fingerprint,
            seed=config.seed,
            batch_size=config.batch_size,
        )
    if state.contract != contract:
        raise RunStateError(
            f"run {paths.name} was trained as {state.contract.describe()}; the model is now "
            f"{contract.describe()}; resume it with --pixels {state.contract.pixels} and its own "
            "model, or pass --fresh or another --run-name"
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


def _callbacks(
    config: RunConfig,
    paths: RunPaths,
    state: ResumeState,
    steps_in_epoch: int,
    writer: CheckpointWriter,
    extra_callbacks: Sequence[keras.callbacks.Callback],
    metric_sums: MetricSums | None,
) -> list[keras.callbacks.Callback]:
    """The callbacks of one `fit`, starting from `state`; per-batch work only where asked for."""
    callbacks = [
        StopOnNonFiniteLoss(),  # first: a diverged batch must not be checkpointed
        *checkpoint_callbacks(
            paths, state, writer, config.patience, config.checkpoint_every, metric_sums
        ),
        EpochLogger(config.epochs),
        EpochSummaries(paths.storage, paths.tensorboard_dir),
        *extra_callbacks,
    ]
    if state.resumes and state.resumes[-1].global_step == state.global_step:
        callbacks.append(FirstResumedStep(state.global_step))  # this fit is the resumed one
    if sys.stderr.isatty():
        callbacks.append(TerminalProgress(config.epochs, steps_in_epoch, state.step_in_epoch))
    if config.fail_at_epoch is not None:
        callbacks.append(FailAfterEpoch(config.fail_at_epoch))
    return callbacks


def _kill_at_step(
    step: int, paths: RunPaths, writer: CheckpointWriter, placement: Placement
) -> KillAtStep:
    """`--kill-at-step`: the run's kill marker is written by this process, or in a group by the
    driver (which starts no group with the option once the marker exists)."""
    if placement.link is not None:
        return KillAtStep(step, writer, lambda body: placement.link.ask("killing", body), False)
    marker = paths.kill_marker(step)
    return KillAtStep(
        step, writer, lambda body: paths.storage.write_json(marker, body), marker.exists()
    )


def _check_optimizer_restored(model: keras.Model, state: ResumeState, paths: RunPaths) -> None:
    iterations = int(model.optimizer.iterations.numpy())
    if iterations != state.global_step:
        raise RuntimeError(
            f"run {paths.name}: optimizer restored at step {iterations}, checkpoint says "
            f"{state.global_step}; the checkpoint {state.weights_file} is inconsistent"
        )
