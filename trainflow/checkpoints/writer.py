"""Committing resume checkpoints: weights first, manifest last, from a background thread."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np

from trainflow.checkpoints.layout import WeightsFileLayout, checkpoint_variables
from trainflow.checkpoints.state import (
    ResumeState,
)
from trainflow.checkpoints.store import checkpoint_files, state_files, step_of
from trainflow.paths import RunPaths
from trainflow.storage.digests import sha256_of_bytes, sha256_of_files

logger = logging.getLogger("trainflow.train")


def write_checkpoint(weights: bytes, paths: RunPaths, state: ResumeState, keep: int) -> ResumeState:
    """Commit `weights` (a `.weights.h5` file's bytes) and `state` as the run's checkpoint of
    `state.global_step`, then remove all but the newest `keep` checkpoints. Returns the state as
    committed (with the weights' hash and, in a store, the generation of the run's lease)."""
    storage, resume_dir = paths.storage, paths.resume_dir
    weights_path, state_path = checkpoint_files(resume_dir, state.global_step)
    storage.write_bytes(weights_path, weights)  # into a store: from memory, no scratch copy
    state = state.model_copy(
        update={
            "weights_file": weights_path.name,
            "weights_sha256": sha256_of_bytes(weights_path.name, weights),
            "lock_generation": storage.owner_generation(state_path),
        }
    )
    storage.write_json(state_path, state.model_dump())
    for old_state_path in state_files(resume_dir)[keep:]:
        old_weights_path, _ = checkpoint_files(resume_dir, step_of(old_state_path))
        storage.remove_file(old_state_path)  # uncommit first: a crash between leaves an orphan
        storage.remove_file(old_weights_path)
    return state


class CheckpointCommitter:
    """Commits checkpoints whose weights file is made already: the best epoch's weights file a
    state names (uploaded and hashed first, once), the checkpoint, then `on_commit`."""

    def __init__(
        self,
        paths: RunPaths,
        keep: int,
        on_commit: Callable[[ResumeState], None] | None = None,
    ) -> None:
        self.paths = paths
        self.keep = keep
        self.on_commit = on_commit
        self.best: tuple[str, str] | None = None  # the best weights file uploaded, and its hash

    def commit(self, weights: bytes, state: ResumeState) -> ResumeState:
        """Commit `weights` (a `.weights.h5` file's bytes) with `state`; the state committed."""
        if state.best_checkpoint is not None and state.best_checkpoint_sha256 is None:
            if self.best is None or self.best[0] != state.best_checkpoint:
                best = Path(state.best_checkpoint)
                self.paths.storage.commit(best)  # into the store, before a manifest names it
                self.best = (state.best_checkpoint, sha256_of_files([best]))
            state = state.model_copy(update={"best_checkpoint_sha256": self.best[1]})
        committed = write_checkpoint(weights, self.paths, state, self.keep)
        if self.on_commit is not None:
            self.on_commit(committed)
        return committed


class CheckpointWriter:
    """Commits resume checkpoints from a background thread, so that training does not wait for
    the disk.

    A commit copies the model's and its optimizer's variables (a fraction of a millisecond); the
    thread writes them in the file layout Keras uses (`WeightsFileLayout`, learnt from `shadow`, a
    throwaway model of the same architecture) while training goes on. A state naming a new best
    epoch's weights file without its hash (`ModelCheckpoint` wrote it on the training thread) has
    it hashed and uploaded here too, before the manifest that names it. One commit is in flight at
    a time: the next one, and `flush`, first wait for it and raise its error, if any (training
    waits only then, and the log says so once). Until its manifest is written a checkpoint does
    not exist, so a crash meanwhile resumes from the one before, as with a synchronous write.
    `on_commit` is told each state once its checkpoint is committed (on the writer's thread: it
    must return at once).
    """

    def __init__(
        self,
        model: keras.Model,
        shadow: keras.Model,
        paths: RunPaths,
        keep: int,
        on_commit: Callable[[ResumeState], None] | None = None,
    ):
        self.sources = checkpoint_variables(model)
        if [v.shape for v in self.sources] != [v.shape for v in checkpoint_variables(shadow)]:
            raise ValueError("the shadow model's variables do not match the model's")
        self.layout = WeightsFileLayout(shadow)
        self.paths = paths
        self.committer = CheckpointCommitter(paths, keep, on_commit)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainflow-checkpoint")
        self.pending: Future | None = None
        self.committed: ResumeState | None = None
        self.waited = False

    def commit(self, state: ResumeState) -> None:
        """Start committing the model as it is now, with `state` (not when this process lost the
        run's lock: the training thread stops here)."""
        self.paths.storage.check_owner(self.paths.resume_dir)
        if self.pending is not None and not self.pending.done() and not self.waited:
            self.waited = True
            logger.info(
                "Training waits for the checkpoint writer: the previous checkpoint is still being "
                "written (one is in flight at a time)"
            )
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
        self.committed = self.committer.commit(self.layout.content(values), state)
