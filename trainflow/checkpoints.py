"""Resume checkpoints: the model, optimizer and callback state after each epoch, committed atomically.

A checkpoint is two files in the resume directory: `epoch-NNNN.weights.h5` (weights and optimizer
state) and `epoch-NNNN.json` (a `ResumeState`), written in that order. The JSON is the commit
record: it is written last and names the sha256 of the weights, so a checkpoint whose JSON is
missing, or whose weights do not match it, is never resumed from.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import keras
from pydantic import BaseModel, ValidationError

from trainflow.atomic import atomic_path, write_json
from trainflow.dataset import sha256_of_files

logger = logging.getLogger("trainflow.checkpoints")

CHECKPOINT_NAME = re.compile(r"^epoch-(?P<epoch>\d{4})\.json$")
CHECKPOINTS_KEPT = 3


class EarlyStoppingState(BaseModel):
    """What `EarlyStopping` forgets at the start of every `fit`."""

    wait: int = 0
    best: float | None = None
    best_epoch: int = 0


class ResumeState(BaseModel):
    """Everything needed to continue training after `epochs_done` epochs."""

    epochs_done: int
    optimizer_iterations: int
    model_kind: str
    data_fingerprint: str
    weights_file: str
    weights_sha256: str
    history: dict[str, list[float]]
    early_stopping: EarlyStoppingState
    best_val_loss: float | None
    best_checkpoint: str | None
    best_epoch: int | None
    stopped_early: bool


def checkpoint_files(resume_dir: Path, epochs_done: int) -> tuple[Path, Path]:
    """The weights file and the state file of the checkpoint after `epochs_done` epochs."""
    stem = resume_dir / f"epoch-{epochs_done:04d}"
    return stem.with_suffix(".weights.h5"), stem.with_suffix(".json")


def write_checkpoint(model: keras.Model, resume_dir: Path, state: ResumeState) -> None:
    """Commit `model`'s weights and `state` as the checkpoint of epoch `state.epochs_done`,
    then remove checkpoints older than the newest `CHECKPOINTS_KEPT`."""
    weights_path, state_path = checkpoint_files(resume_dir, state.epochs_done)
    with atomic_path(weights_path) as temporary:
        model.save_weights(temporary)
    state = state.model_copy(
        update={
            "weights_file": weights_path.name,
            "weights_sha256": sha256_of_files([weights_path]),
        }
    )
    write_json(state_path, state.model_dump())
    for old_state_path in _committed_state_files(resume_dir)[CHECKPOINTS_KEPT:]:
        old_weights_path, _ = checkpoint_files(resume_dir, _epoch_of(old_state_path))
        old_state_path.unlink()  # uncommit first, so a crash in between leaves no half checkpoint
        old_weights_path.unlink(missing_ok=True)


def latest_checkpoint(resume_dir: Path) -> ResumeState | None:
    """The newest checkpoint whose state parses and whose weights match their recorded sha256."""
    for state_path in _committed_state_files(resume_dir):
        try:
            state = ResumeState.model_validate_json(state_path.read_text())
        except (OSError, ValidationError) as error:
            logger.warning("Skipping unreadable checkpoint %s: %s", state_path, error)
            continue
        weights_path = resume_dir / state.weights_file
        if not weights_path.is_file() or sha256_of_files([weights_path]) != state.weights_sha256:
            logger.warning("Skipping checkpoint %s: its weights are missing or damaged", state_path)
            continue
        return state
    return None


def _committed_state_files(resume_dir: Path) -> list[Path]:
    """State files, newest epoch first."""
    if not resume_dir.is_dir():
        return []
    found = [path for path in resume_dir.iterdir() if CHECKPOINT_NAME.match(path.name)]
    return sorted(found, key=_epoch_of, reverse=True)


def _epoch_of(state_path: Path) -> int:
    match = CHECKPOINT_NAME.match(state_path.name)
    assert match is not None  # only called on names _committed_state_files selected
    return int(match["epoch"])
