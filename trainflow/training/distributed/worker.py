"""A training worker: a process of its own, started by the group (`group.py`) as
`python -m trainflow.training.distributed.worker` with its `WorkerSpec` as JSON on stdin.

It makes its strategy first (TensorFlow's devices and collectives are fixed once anything runs),
trains with `session.fit_from`, and talks to the driver over one connection: the chief (rank 0)
sends each resume checkpoint it commits, each epoch's logs and its log records; every worker sends
how it ended. A worker whose driver is gone (the connection closes) exits at once: it must not
outlive the process that holds the run's lock.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import traceback
from multiprocessing.connection import Client, Connection
from pathlib import Path

from pydantic import BaseModel

from trainflow.checkpoints.state import ResumeState
from trainflow.config import RunConfig
from trainflow.environment import configure_environment
from trainflow.errors import error_reason, is_user_input_error
from trainflow.paths import RunPaths
from trainflow.results import PreparedData


class WorkerSpec(BaseModel):
    """What a worker is told: the run, its rank, and where its driver listens."""

    config: RunConfig
    data: PreparedData
    paths: RunPaths
    state: ResumeState | None
    rank: int
    workers: int
    driver: tuple[str, int]  # the address of the driver's listener
    authkey: str  # hex


class DriverLink:
    """The connection to the driver: sends from any thread; the driver's end closing ends the
    process (watched by a thread of its own) unless the worker has said how it ended."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.sending = threading.Lock()
        self.ended = False
        threading.Thread(target=self._exit_when_closed, daemon=True).start()

    def end(self, *message: object) -> None:
        """Send the last message: the driver may close its end from now on."""
        self.ended = True
        self.send(*message)

    def send(self, *message: object) -> None:
        with self.sending:
            self.connection.send(message)

    def _exit_when_closed(self) -> None:
        try:
            while True:
                self.connection.recv()
        except (EOFError, OSError):
            if not self.ended:
                os._exit(1)  # the driver is gone: nothing this process does is anyone's any more


class RecordRelay(logging.Handler):
    """Sends trainflow's log records to the driver, which logs them as its own."""

    def __init__(self, link: DriverLink, rank: int) -> None:
        super().__init__()
        self.link = link
        self.rank = rank

    def emit(self, record: logging.LogRecord) -> None:
        message = f"[worker {self.rank}] {record.getMessage()}"
        self.link.send("log", record.levelno, record.name, message)


def run_worker(spec: WorkerSpec, link: DriverLink) -> ResumeState:
    """Train as worker `spec.rank`; the state the run ended in."""
    import keras

    from trainflow.training.distributed.placement import (
        Placement,
        mirrored_strategy,
        multi_worker_strategy,
    )
    from trainflow.training.session import fit_from

    if spec.workers > 1:
        strategy = multi_worker_strategy()
    else:
        strategy = mirrored_strategy(spec.config.devices)

    class EpochRelay(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs=None) -> None:
            link.send("epoch", epoch, {key: float(value) for key, value in (logs or {}).items()})

    chief = spec.rank == 0
    with tempfile.TemporaryDirectory(prefix="trainflow-worker-") as scratch:
        written = None if chief else RunPaths(run_dir=Path(scratch) / "runs" / spec.paths.name)
        placement = Placement(strategy, spec.rank, spec.workers, written)
        return fit_from(
            spec.config,
            spec.data,
            spec.paths,
            spec.state,
            [EpochRelay()] if chief else [],
            on_commit=(lambda state: link.send("committed", state.model_dump(mode="json")))
            if chief
            else None,
            placement=placement,
        )


def serve(spec: WorkerSpec) -> bool:
    """Train as `spec` says, telling the driver how it went; whether it went well (a failure is
    told to the driver, and its traceback printed unless it is the user's to fix)."""
    link = DriverLink(Client(spec.driver, authkey=bytes.fromhex(spec.authkey)))
    link.send("hello", spec.rank, os.getpid())
    relayed = logging.getLogger("trainflow")
    relayed.handlers[:] = [RecordRelay(link, spec.rank)]
    relayed.propagate = False
    relayed.setLevel(logging.INFO if spec.rank == 0 else logging.WARNING)
    try:
        state = run_worker(spec, link)
    except Exception as error:
        if is_user_input_error(error):  # the driver says it in one line: no traceback here
            link.end("failed", True, error_reason(error))
        else:
            link.end("failed", False, f"{type(error).__name__}: {error_reason(error)}")
            traceback.print_exc()
        return False
    link.end("finished", state.model_dump(mode="json"))
    return True


def main() -> None:
    configure_environment()
    sys.exit(0 if serve(WorkerSpec.model_validate_json(sys.stdin.read())) else 1)


if __name__ == "__main__":
    main()
