"""The driver of distributed training: it starts the worker processes, commits the checkpoints
the chief sends (the run's only writer), logs what the workers report, and brings the whole group
down when one worker dies.

The training task is the driver and keeps the run's lock; the workers (`worker.py`) are processes
of their own because TensorFlow fixes its devices and collectives once per process, and a retried
task needs new ones. One dead worker leaves the others waiting in a collective forever
(`MultiWorkerMirroredStrategy` cannot go on with fewer), so the driver stops them all within
`POLL_SECONDS` of the death and fails the task with `WorkerDiedError`, which Prefect retries: the
new group resumes from the newest committed checkpoint, at its step.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, Listener, wait
from pathlib import Path

import keras

from trainflow.checkpoints.state import ResumeState
from trainflow.checkpoints.writer import CheckpointCommitter
from trainflow.config import RunConfig
from trainflow.errors import UserInputError
from trainflow.paths import RunPaths
from trainflow.results import PreparedData
from trainflow.training.callbacks.monitoring import EpochSummaries
from trainflow.training.distributed.launchers import LocalLauncher, RayLauncher, WorkerHandle
from trainflow.training.distributed.loop import per_example_loss
from trainflow.training.distributed.worker import WorkerSpec
from trainflow.training.models import build_classifier

logger = logging.getLogger("trainflow.train")

# How often the driver looks for a dead worker: the bound on how long the others outlive it.
POLL_SECONDS = 0.5
# How long the workers may take to start and call back (each imports TensorFlow).
START_TIMEOUT_SECONDS = 300


class WorkerDiedError(RuntimeError):
    """A worker process died; the group was stopped (a retry resumes from the newest checkpoint)."""


class WorkerInputError(UserInputError):
    """A worker stopped on the user's input (one line, as in one process)."""


def fit_in_workers(
    config: RunConfig,
    data: PreparedData,
    paths: RunPaths,
    state: ResumeState | None,
    extra_callbacks: Sequence[keras.callbacks.Callback],
    on_commit: Callable[[ResumeState], None] | None = None,
) -> ResumeState:
    """Train as `session.fit_from` does, in `config.workers` worker processes (one for
    `--distribute mirrored`), local ones or Ray actors (`config.ray_address`); the chief's state at
    the end."""
    if config.workers > 1:
        _check_trainable_by_workers(config, data)
    launcher = RayLauncher(config.ray_address) if config.ray_address else LocalLauncher()
    authkey = secrets.token_bytes(32)
    with Listener((launcher.driver_host, 0), authkey=authkey) as listener:
        workers: list[WorkerHandle] = []
        try:

            def spec_of(rank: int) -> WorkerSpec:
                return WorkerSpec(
                    config=_once_killed(config, paths),
                    data=data,
                    paths=paths,
                    state=state,
                    rank=rank,
                    workers=config.workers,
                    driver=listener.address,
                    authkey=authkey.hex(),
                )

            workers = launcher.start(spec_of, config.workers)
            connections = _accept_all(listener, workers)
            writes = _RunWrites(paths, config.keep_checkpoints, on_commit)
            # What the chief's hooks drive here: the caller's callbacks, and the run's TensorBoard.
            hooks = [*extra_callbacks, EpochSummaries(paths.storage, paths.tensorboard_dir)]
            return _Group(workers, connections, hooks, writes).supervise()
        finally:
            for worker in workers:
                worker.kill()  # what is left of the group (a finished worker has exited)


def _once_killed(config: RunConfig, paths: RunPaths) -> RunConfig:
    """`config` for the workers: without `--kill-at-step` once the run's kill marker exists."""
    if config.kill_at_step is None or not paths.kill_marker(config.kill_at_step).exists():
        return config
    return config.model_copy(update={"kill_at_step": None})


class _RunWrites:
    """The driver's writes to the run, asked for by the chief: its checkpoints (the best epoch's
    weights file first, when it is new), committed with the driver's lock; the kill marker."""

    def __init__(
        self, paths: RunPaths, keep: int, on_commit: Callable[[ResumeState], None] | None
    ) -> None:
        self.paths = paths
        self.committer = CheckpointCommitter(paths, keep, on_commit)
        self.committed: ResumeState | None = None

    def checkpoint(self, state: dict, weights: bytes, best: bytes | None) -> dict:
        state = ResumeState.model_validate(state)
        if state.best_checkpoint is not None:
            # The chief's file, by name here: uploaded and hashed by the committer if it is new.
            path = self.paths.best_checkpoints_dir / Path(state.best_checkpoint).name
            if best is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f".{path.name}.partial")
                partial.write_bytes(best)
                partial.replace(path)
            state = state.model_copy(update={"best_checkpoint": str(path)})
        self.committed = self.committer.commit(weights, state)
        return self.committed.model_dump(mode="json")

    def kill_marker(self, record: dict) -> None:
        self.paths.storage.write_json(self.paths.kill_marker(record["killed_at_step"]), record)


def _check_trainable_by_workers(config: RunConfig, data: PreparedData) -> None:
    """Refuse, before any worker starts, a model the workers' loop cannot train as `fit` would."""
    model, _ = build_classifier(config.recipe, data.image_shape, data.num_classes, config.pixels)
    per_example_loss(model)
    keras.backend.clear_session()


def _accept_all(listener: Listener, workers: list[WorkerHandle]) -> list[Connection]:
    """Each worker's connection, by rank; a worker that dies before calling back fails the start."""
    accepted: list[Connection] = []
    threading.Thread(
        target=lambda: accepted.extend(listener.accept() for _ in workers), daemon=True
    ).start()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while len(accepted) < len(workers):
        for rank, worker in enumerate(workers):
            if worker.exit_code() is not None:
                raise WorkerDiedError(f"worker {rank} {worker.describe_exit()} while starting")
        if time.monotonic() > deadline:
            raise WorkerDiedError(f"workers did not start within {START_TIMEOUT_SECONDS} s")
        time.sleep(0.05)  # a poll for the accepting thread, not a wait for an event in time
    by_rank: list[Connection | None] = [None] * len(workers)
    for connection in accepted:
        _, rank = connection.recv()  # "hello": the first message of each worker
        by_rank[rank] = connection
    return by_rank


class _Group:
    """The running workers, their messages, and how the group ends."""

    def __init__(
        self,
        workers: list[WorkerHandle],
        connections: list[Connection],
        hooks: Sequence[keras.callbacks.Callback],
        writes: _RunWrites,
    ) -> None:
        self.workers = workers
        self.connections = connections
        self.hooks = hooks
        self.writes = writes
        self.finished: dict[int, ResumeState] = {}
        self.failure: tuple[int, bool, str] | None = None

    def supervise(self) -> ResumeState:
        open_connections = dict(zip(self.connections, range(len(self.connections))))
        while len(self.finished) < len(self.workers) and self.failure is None:
            for connection in wait(list(open_connections), timeout=POLL_SECONDS):
                try:
                    self._handle(open_connections[connection], connection.recv())
                except EOFError:
                    del open_connections[connection]
            self._check_alive()
        if self.failure is not None:
            rank, user_error, message = self.failure
            if user_error:
                raise WorkerInputError(message)
            self._check_killed()  # a collective fails in the others when one worker is killed
            raise RuntimeError(f"worker {rank} of {len(self.workers)} failed: {message}")
        return self.writes.committed or self.finished[0]

    def _handle(self, rank: int, message: tuple) -> None:
        kind, *body = message
        if kind == "checkpoint":
            self.connections[rank].send(self.writes.checkpoint(*body))
        elif kind == "killing":
            self.writes.kill_marker(*body)
            self.connections[rank].send(None)
        elif kind == "hook":
            name, *arguments = body
            for callback in self.hooks:
                getattr(callback, name)(*arguments)
        elif kind == "log":
            level, name, text = body
            logging.getLogger(name).log(level, "%s", text)
        elif kind == "finished":
            self.finished[rank] = ResumeState.model_validate(body[0])
        elif kind == "failed":
            self.failure = (rank, *body)

    def _check_alive(self) -> None:
        for rank, worker in enumerate(self.workers):
            if worker.exit_code() not in (None, 0):
                self._drain(rank)  # its last words, if it said why it ends
            if worker.exit_code() not in (None, 0) and self.failure is None:
                # Died without a word: the others wait in a collective for it forever.
                raise self._died(rank)

    def _check_killed(self) -> None:
        for rank, worker in enumerate(self.workers):
            if worker.killed():
                raise self._died(rank)

    def _died(self, rank: int) -> WorkerDiedError:
        return WorkerDiedError(
            f"worker {rank} of {len(self.workers)} {self.workers[rank].describe_exit()}; the "
            "group was stopped, and a retry resumes from the newest checkpoint"
        )

    def _drain(self, rank: int) -> None:
        connection = self.connections[rank]
        try:
            while connection.poll():
                self._handle(rank, connection.recv())
        except (EOFError, OSError):
            pass
