"""Resume checkpoints: everything training needs to continue at the exact step, committed atomically.

A checkpoint is two files in the resume directory, named by the global training step:
`step-NNNNNNNNN.weights.h5` (weights and optimizer state, written by Keras) and
`step-NNNNNNNNN.json` (a `ResumeState`). The JSON is the manifest: it is written last, after the
weights are fsynced and renamed into place, and it names their sha256. A checkpoint without its
JSON, or whose weights do not match it, is never resumed from: its files are moved aside into the
quarantine directory with a warning.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import h5py
import keras
import numpy as np
from pydantic import BaseModel, ValidationError

from trainflow.atomic import atomic_path, write_json
from trainflow.dataset import sha256_of_files

logger = logging.getLogger("trainflow.checkpoints")

STATE_FILE = re.compile(r"^step-(?P<step>\d{9})\.json$")
CHECKPOINT_FORMAT_VERSION = 1


class EarlyStoppingState(BaseModel):
    """What `EarlyStopping` forgets at the start of every `fit`."""

    wait: int = 0
    best: float | None = None
    best_epoch: int = 0


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
    model_kind: str
    data_fingerprint: str
    seed: int
    batch_size: int
    weights_file: str = ""
    weights_sha256: str = ""
    metrics_state: list[list[float] | float] = []
    seed_generator_states: list[list[int]] = []
    history: dict[str, list[float]] = {}
    early_stopping: EarlyStoppingState = EarlyStoppingState()
    best_val_loss: float | None = None
    best_checkpoint: str | None = None
    best_checkpoint_sha256: str | None = None
    best_epoch: int | None = None
    stopped_early: bool = False
    resumes: list[ResumePoint] = []


def checkpoint_files(resume_dir: Path, global_step: int) -> tuple[Path, Path]:
    """The weights file and the state file (manifest) of the checkpoint at `global_step`."""
    stem = f"step-{global_step:09d}"
    return resume_dir / f"{stem}.weights.h5", resume_dir / f"{stem}.json"


def write_checkpoint(
    weights: bytes, resume_dir: Path, state: ResumeState, keep: int
) -> ResumeState:
    """Commit `weights` (a `.weights.h5` file's bytes) and `state` as the checkpoint of
    `state.global_step`, then remove all but the newest `keep` checkpoints. Returns the state as
    committed (with the weights' hash)."""
    weights_path, state_path = checkpoint_files(resume_dir, state.global_step)
    with atomic_path(weights_path) as temporary:
        temporary.write_bytes(weights)
    state = state.model_copy(
        update={
            "weights_file": weights_path.name,
            "weights_sha256": sha256_of_files([weights_path]),
        }
    )
    write_json(state_path, state.model_dump())
    for old_state_path in _state_files(resume_dir)[keep:]:
        old_weights_path, _ = checkpoint_files(resume_dir, _step_of(old_state_path))
        old_state_path.unlink()  # uncommit first: a crash in between leaves an orphan, not a fake
        old_weights_path.unlink(missing_ok=True)
    return state


def checkpoint_variables(model: keras.Model) -> list:
    """The variables a checkpoint holds, in `WeightsFileLayout`'s order: model, then optimizer."""
    return [*model.variables, *model.optimizer.variables]


class WeightsFileLayout:
    """Where each variable of a model and its optimizer goes in the `.weights.h5` file that Keras
    writes for it, learnt once; then such a file is made from plain arrays by copying bytes, in
    well under a millisecond, instead of by Keras's per-object saving code (10-15 ms of Python per
    checkpoint, which also held up the training thread).

    The layout is learnt by saving a model of the same architecture whose variable number i holds
    the value i+1 everywhere: each dataset of that file then names its variable, and HDF5 says
    where in the file its bytes are. Every checkpoint is that file with the datasets' bytes
    replaced, so Keras loads it as its own.
    """

    def __init__(self, shadow: keras.Model) -> None:
        variables = checkpoint_variables(shadow)
        for index, variable in enumerate(variables):
            variable.assign(np.full(variable.shape, index + 1, dtype=variable.dtype))
        self.variable_count = len(variables)
        # (byte offset, dtype, shape, variable index) of every dataset in the file
        self.spans: list[tuple[int, np.dtype, tuple[int, ...], int]] = []
        with tempfile.TemporaryDirectory() as directory:
            template = Path(directory) / "layout.weights.h5"
            shadow.save_weights(template)
            self.template = template.read_bytes()
            with h5py.File(template, "r") as handle:
                handle.visititems(self._learn_span)

    def _learn_span(self, name: str, item: object) -> None:
        if not isinstance(item, h5py.Dataset) or item.size == 0:
            return
        values = np.asarray(item[()])
        index = int(values.flat[0]) - 1
        offset = item.id.get_offset()
        if not 0 <= index < self.variable_count or not (values == index + 1).all():
            raise ValueError(f"cannot tell which variable dataset {name} of the weights file holds")
        if offset is None or item.compression is not None or item.chunks is not None:
            raise ValueError(f"dataset {name} of the weights file is not stored as plain bytes")
        self.spans.append((offset, item.dtype, item.shape, index))

    def content(self, values: list[np.ndarray]) -> bytes:
        """The file's bytes for `values`: the variables' arrays, in the order the layout learnt."""
        if len(values) != self.variable_count:
            raise ValueError(
                f"{len(values)} arrays for a layout of {self.variable_count} variables"
            )
        content = bytearray(self.template)
        for offset, dtype, shape, index in self.spans:
            data = np.ascontiguousarray(values[index], dtype=dtype).reshape(shape).tobytes()
            content[offset : offset + len(data)] = data
        return bytes(content)


class CheckpointWriter:
    """Commits resume checkpoints from a background thread, so that training does not wait for
    the disk.

    A commit copies the model's and its optimizer's variables (a fraction of a millisecond); the
    thread writes them in the file layout Keras uses (`WeightsFileLayout`, learnt from `shadow`, a
    throwaway model of the same architecture) while training goes on. One commit is in flight at a
    time: the next one, and `flush`, first wait for it and raise its error, if any. Until its
    manifest is written a checkpoint does not exist, so a crash meanwhile resumes from the one
    before, as it would with a synchronous write.
    """

    def __init__(self, model: keras.Model, shadow: keras.Model, resume_dir: Path, keep: int):
        self.sources = checkpoint_variables(model)
        if [v.shape for v in self.sources] != [v.shape for v in checkpoint_variables(shadow)]:
            raise ValueError("the shadow model's variables do not match the model's")
        self.layout = WeightsFileLayout(shadow)
        self.resume_dir = resume_dir
        self.keep = keep
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainflow-checkpoint")
        self.pending: Future | None = None
        self.committed: ResumeState | None = None

    def commit(self, state: ResumeState) -> None:
        """Start committing the model as it is now, with `state`."""
        self.flush()
        values = [np.array(variable.value) for variable in self.sources]
        self.pending = self.executor.submit(self._write, values, state)

    def flush(self) -> ResumeState | None:
        """Wait for the commit in flight; the newest committed state (None before any)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()
        return self.committed

    def close(self) -> ResumeState | None:
        """`flush`, and stop the thread."""
        try:
            return self.flush()
        finally:
            self.executor.shutdown()

    def _write(self, values: list[np.ndarray], state: ResumeState) -> None:
        weights = self.layout.content(values)
        self.committed = write_checkpoint(weights, self.resume_dir, state, self.keep)


def load_latest_checkpoint(resume_dir: Path, quarantine_dir: Path) -> ResumeState | None:
    """The newest valid checkpoint's state, after moving every invalid file aside.

    Invalid: a manifest that does not parse, weights missing or not matching the manifest's sha256,
    weights without a manifest, and temporaries of an interrupted write.
    """
    if not resume_dir.is_dir():
        return None
    valid: list[tuple[ResumeState, Path]] = []
    for state_path in _state_files(resume_dir):
        state = _valid_state(resume_dir, state_path)
        if state is not None:
            valid.append((state, state_path))
    kept = {name for state, path in valid for name in (path.name, state.weights_file)}
    invalid = sorted(path for path in resume_dir.iterdir() if path.name not in kept)
    if invalid:
        quarantine(invalid, quarantine_dir)
    if not valid:
        if invalid:
            logger.warning("No valid checkpoint left in %s: starting from epoch 0", resume_dir)
        return None
    return valid[0][0]


def quarantine(paths: list[Path], quarantine_dir: Path) -> None:
    """Move `paths` into `quarantine_dir` for inspection (never delete them), with a warning."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in paths:
        target = quarantine_dir / path.name
        suffix = 1
        while target.exists():
            target = quarantine_dir / f"{path.name}.{suffix}"
            suffix += 1
        os.replace(path, target)
        moved.append(path.name)
    logger.warning(
        "Set aside invalid checkpoint files (truncated, garbled, or without manifest) in %s: %s",
        quarantine_dir,
        ", ".join(moved),
    )


def _valid_state(resume_dir: Path, state_path: Path) -> ResumeState | None:
    try:
        state = ResumeState.model_validate_json(state_path.read_bytes())
    except (OSError, ValidationError, UnicodeDecodeError):
        return None
    weights_path = resume_dir / state.weights_file
    if (
        state.format_version != CHECKPOINT_FORMAT_VERSION
        or weights_path.parent != resume_dir
        or not weights_path.is_file()
        or sha256_of_files([weights_path]) != state.weights_sha256
    ):
        return None
    return state


def committed_steps(resume_dir: Path) -> list[int]:
    """Global steps of the checkpoints whose manifest is in place, newest first (not verified)."""
    return [_step_of(path) for path in _state_files(resume_dir)] if resume_dir.is_dir() else []


def _state_files(resume_dir: Path) -> list[Path]:
    """Manifests, newest step first."""
    found = [path for path in resume_dir.iterdir() if STATE_FILE.match(path.name)]
    return sorted(found, key=_step_of, reverse=True)


def _step_of(state_path: Path) -> int:
    match = STATE_FILE.match(state_path.name)
    return int(match["step"]) if match else -1


def seed_generators(model: keras.Model) -> list[keras.random.SeedGenerator]:
    """The random seed generators of the model's layers (dropout), whose state no Keras file keeps."""
    return [layer.seed_generator for layer in model.layers if hasattr(layer, "seed_generator")]


def capture_random_state(model: keras.Model) -> list[list[int]]:
    """The seed generators' states, as plain integers."""
    return [np.asarray(generator.state.value).tolist() for generator in seed_generators(model)]


def restore_random_state(model: keras.Model, states: list[list[int]]) -> None:
    """Put back the seed generators' states captured by `capture_random_state`."""
    generators = seed_generators(model)
    if len(generators) != len(states):
        raise ValueError(f"checkpoint has {len(states)} seed states, model {len(generators)}")
    for generator, state in zip(generators, states):
        generator.state.assign(np.asarray(state, dtype=generator.state.dtype))


def capture_metrics_state(model: keras.Model) -> list:
    """The running values of the model's training metrics (sums and counts)."""
    return [np.asarray(variable.value).tolist() for variable in model.metrics_variables]


def restore_metrics_state(model: keras.Model, values: list) -> None:
    """Put back metric values captured by `capture_metrics_state`."""
    variables = model.metrics_variables
    if len(variables) != len(values):
        raise ValueError(f"checkpoint has {len(values)} metric values, model {len(variables)}")
    for variable, value in zip(variables, values):
        variable.assign(np.asarray(value, dtype=variable.dtype))
