"""The driver of distributed training: it starts the worker processes, relays what the chief
commits and logs, and brings the whole group down when one worker dies.

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

import keras

from trainflow.checkpoints.state import ResumeState
from trainflow.config import RunConfig
from trainflow.errors import UserInputError
from trainflow.paths import RunPaths
from trainflow.results import PreparedData
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
                    config=config,
                    data=data,
                    paths=paths,
                    state=state,
                    rank=rank,
                    workers=config.workers,
                    driver=listener.address,
                    authkey=authkey.hex(),
                )

            workers = launcher.start(spec_of, config.workers)
            group = _Group(workers, _accept_all(listener, workers), extra_callbacks, on_commit)
            return group.supervise()
        finally:
            for worker in workers:
                worker.kill()  # what is left of the group (a finished worker has exited)


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
        _, rank, _ = connection.recv()  # "hello": the first message of each worker
        by_rank[rank] = connection
    return by_rank


class _Group:
    """The running workers, their messages, and how the group ends."""

    def __init__(
        self,
        workers: list[WorkerHandle],
        connections: list[Connection],
        extra_callbacks: Sequence[keras.callbacks.Callback],
        on_commit: Callable[[ResumeState], None] | None,
    ) -> None:
        self.workers = workers
        self.connections = connections
        self.extra_callbacks = extra_callbacks
        self.on_commit = on_commit
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
        return self.finished[0]

    def _handle(self, rank: int, message: tuple) -> None:
        kind, *body = message
        if kind == "committed" and self.on_commit is not None:
            self.on_commit(ResumeState.model_validate(body[0]))
        elif kind == "epoch":
            for callback in self.extra_callbacks:
                callback.on_epoch_end(*body)
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
