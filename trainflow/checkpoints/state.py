"""What a resume checkpoint records besides the weights: the `ResumeState` manifest."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from trainflow.contract import ModelContract

CHECKPOINT_FORMAT_VERSION = 1


class EarlyStoppingState(BaseModel):
    """What `EarlyStopping` forgets at the start of every `fit`."""

    wait: int = 0
    best: float | None = None
    best_epoch: int = 0


class DataOrder(BaseModel):
    """How each epoch orders the training examples: the in-memory path's shuffle of the whole
    split, or the streaming path's shuffle within windows of `window_groups` row groups. A resumed
    run keeps the order its run started with, whatever the memory budget is now, so that it feeds
    the batches the interrupted run would have."""

    input: Literal["memory", "stream"] = "memory"
    window_groups: int | None = None  # streaming only


class ResumePoint(BaseModel):
    """Where an interrupted training run was picked up again."""

    epochs_done: int
    step_in_epoch: int
    global_step: int


class ResumeState(BaseModel):
    """Everything needed to continue training at global step `global_step`.

    `step_in_epoch` batches of epoch `epochs_done` (0-based) are done; `metrics_state` holds the
    running sums of that epoch's training metrics, so the epoch's logged loss and accuracy come out
    the same as if it had not been interrupted.
    """

    format_version: int = CHECKPOINT_FORMAT_VERSION
    global_step: int = 0
    epochs_done: int = 0
    step_in_epoch: int = 0
    model_kind: str  # the model: a built-in name or a builder's MODULE:FUNCTION
    contract: ModelContract = ModelContract()  # how the model is fed and read (pixels included)
    optimizer: str = "adam"
    learning_rate: float | None = None
    data_fingerprint: str
    seed: int
    batch_size: int
    weights_file: str = ""
    weights_sha256: str = ""
    metrics_state: list[list[float] | float] = []
    seed_generator_states: list[list[int]] = []
    history: dict[str, list[float]] = {}
    # When each epoch of `history` ended (ms since the Unix epoch): the timestamps its metrics are
    # tracked with, the same in every attempt, so that sending an epoch again adds no point.
    epoch_ends_ms: list[int] = []
    early_stopping: EarlyStoppingState = EarlyStoppingState()
    best_val_loss: float | None = None
    best_checkpoint: str | None = None
    best_checkpoint_sha256: str | None = None
    best_epoch: int | None = None
    stopped_early: bool = False
    resumes: list[ResumePoint] = []
    data_order: DataOrder = DataOrder()  # checkpoints from before streaming: in memory
    # In a store, the generation of the run's lease its writer held: a later reader can tell the
    # checkpoints of each owner of the run apart (None on a local disk).
    lock_generation: int | None = None
