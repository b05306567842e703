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
import os
import secrets
import signal
import socket
import subprocess
import sys
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
from trainflow.training.distributed.placement import tf_config
from trainflow.training.distributed.worker import WorkerSpec

logger = logging.getLogger("trainflow.train")

# How often the driver looks for a dead worker: the bound on how long the others outlive it.
POLL_SECONDS = 0.5
# How long the workers may take to start and call back (each imports TensorFlow).
START_TIMEOUT_SECONDS = 300


class WorkerDiedError(RuntimeError):
    """A worker process died; the group was stopped (a retry resumes from the newest checkpoint)."""


class WorkerInputError(UserInputError):
    """A worker stopped on the user's input (one line, as in one process)."""


def free_ports(count: int) -> list[int]:
    """`count` TCP ports free on 127.0.0.1 now, for the workers' collective servers."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def fit_in_workers(
    config: RunConfig,
    data: PreparedData,
    paths: RunPaths,
    state: ResumeState | None,
    extra_callbacks: Sequence[keras.callbacks.Callback],
    on_commit: Callable[[ResumeState], None] | None = None,
) -> ResumeState:
    """Train as `session.fit_from` does, in `config.workers` worker processes (one for
    `--distribute mirrored`); the chief's state at the end."""
    count = config.workers
    authkey = secrets.token_bytes(32)
    ports = free_ports(count) if count > 1 else []
    with Listener(("127.0.0.1", 0), authkey=authkey) as listener:
        processes = []
        try:
            for rank in range(count):
                spec = WorkerSpec(
                    config=config,
                    data=data,
                    paths=paths,
                    state=state,
                    rank=rank,
                    workers=count,
                    driver=listener.address,
                    authkey=authkey.hex(),
                )
                processes.append(_start(spec, tf_config(ports, rank) if ports else None))
            group = _Group(processes, _accept_all(listener, processes), extra_callbacks, on_commit)
            return group.supervise()
        finally:
            _stop(processes)


def _start(spec: WorkerSpec, cluster: str | None) -> subprocess.Popen:
    environment = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    if cluster is not None:
        environment["TF_CONFIG"] = cluster
    process = subprocess.Popen(
        [sys.executable, "-m", "trainflow.training.distributed.worker"],
        stdin=subprocess.PIPE,
        env=environment,
    )
    process.stdin.write(spec.model_dump_json().encode())
    process.stdin.close()
    return process


def _accept_all(listener: Listener, processes: list[subprocess.Popen]) -> list[Connection]:
    """Each worker's connection, by rank; a worker that dies before calling back fails the start."""
    accepted: list[Connection] = []
    threading.Thread(
        target=lambda: accepted.extend(listener.accept() for _ in processes), daemon=True
    ).start()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while len(accepted) < len(processes):
        for rank, process in enumerate(processes):
            if process.poll() is not None:
                raise WorkerDiedError(f"worker {rank} exited ({_how(process)}) while starting")
        if time.monotonic() > deadline:
            raise WorkerDiedError(f"workers did not start within {START_TIMEOUT_SECONDS} s")
        time.sleep(0.05)  # a poll for the accepting thread, not a wait for an event in time
    by_rank: list[Connection | None] = [None] * len(processes)
    for connection in accepted:
        _, rank, _ = connection.recv()  # "hello": the first message of each worker
        by_rank[rank] = connection
    return by_rank


class _Group:
    """The running workers, their messages, and how the group ends."""

    def __init__(
        self,
        processes: list[subprocess.Popen],
        connections: list[Connection],
        extra_callbacks: Sequence[keras.callbacks.Callback],
        on_commit: Callable[[ResumeState], None] | None,
    ) -> None:
        self.processes = processes
        self.connections = connections
        self.extra_callbacks = extra_callbacks
        self.on_commit = on_commit
        self.finished: dict[int, ResumeState] = {}
        self.failure: tuple[int, bool, str] | None = None

    def supervise(self) -> ResumeState:
        open_connections = dict(zip(self.connections, range(len(self.connections))))
        while len(self.finished) < len(self.processes) and self.failure is None:
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
            raise RuntimeError(f"worker {rank} of {len(self.processes)} failed: {message}")
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
        for rank, process in enumerate(self.processes):
            if process.poll() not in (None, 0):
                self._drain(rank)  # its last words, if it said why it ends
            if process.poll() not in (None, 0) and self.failure is None:
                # Died without a word: the others wait in a collective for it forever.
                raise self._died(rank)

    def _check_killed(self) -> None:
        for rank, process in enumerate(self.processes):
            if (process.poll() or 0) < 0:
                raise self._died(rank)

    def _died(self, rank: int) -> WorkerDiedError:
        return WorkerDiedError(
            f"worker {rank} of {len(self.processes)} died ({_how(self.processes[rank])}); the "
            "group was stopped, and a retry resumes from the newest checkpoint"
        )

    def _drain(self, rank: int) -> None:
        connection = self.connections[rank]
        try:
            while connection.poll():
                self._handle(rank, connection.recv())
        except (EOFError, OSError):
            pass


def _how(process: subprocess.Popen) -> str:
    code = process.returncode
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def _stop(processes: list[subprocess.Popen]) -> None:
    """Kill what is left of the group and reap it."""
    for process in processes:
        if process.poll() is None:
            process.kill()
    for process in processes:
        process.wait()
