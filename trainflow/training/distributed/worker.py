"""A training worker: a process of its own, started by the group (`group.py`) as
`python -m trainflow.training.distributed.worker` with its `WorkerSpec` as JSON on stdin, or in a
Ray actor (`launchers.py`).

It makes its strategy first (TensorFlow's devices and collectives are fixed once anything runs),
trains with `session.fit_from` into a scratch copy of the run, and talks to the driver over one
connection (`relay.DriverLink`): the chief (rank 0) sends each checkpoint for the driver to commit,
its training and epoch hooks and its log records; every worker says how it ended. It reads the
prepared data and the checkpoint it resumes from where they lie (a store's, through its own
`Storage`), and writes nothing to the run.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import traceback
from multiprocessing.connection import Client
from pathlib import Path

from pydantic import BaseModel

from trainflow.checkpoints.state import ResumeState
from trainflow.config import RunConfig
from trainflow.environment import configure_environment
from trainflow.errors import error_reason, is_user_input_error
from trainflow.paths import ArtifactPaths, RunPaths
from trainflow.results import PreparedData
from trainflow.storage.locations import is_url
from trainflow.training.distributed.relay import DriverLink


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


class RecordRelay(logging.Handler):
    """Sends trainflow's log records to the driver, which logs them as its own."""

    def __init__(self, link: DriverLink, rank: int) -> None:
        super().__init__()
        self.link = link
        self.rank = rank

    def emit(self, record: logging.LogRecord) -> None:
        message = f"[worker {self.rank}] {record.getMessage()}"
        self.link.send("log", record.levelno, record.name, message)


def inputs_here(spec: WorkerSpec) -> tuple[PreparedData, RunPaths]:
    """The prepared data and the run's paths as this process reads them: the driver's for a local
    artifacts directory; in a store, through this process's own face of it, with the checkpoint
    to resume from brought to it."""
    if not is_url(spec.config.artifacts):
        return spec.data, spec.paths
    root = ArtifactPaths.at(spec.config.artifacts)
    paths = root.run(spec.paths.name)
    if spec.state is not None:
        paths.storage.local_copy(paths.resume_dir / spec.state.weights_file)
    return spec.data.model_copy(update={"paths": root.data(spec.data.fingerprint)}), paths


def run_worker(spec: WorkerSpec, link: DriverLink) -> ResumeState:
    """Train as worker `spec.rank`; the state the run ended in, as this worker saw it."""
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

    class HookRelay(keras.callbacks.Callback):
        """The chief's training and epoch hooks, for the callbacks the driver runs."""

        def on_train_begin(self, logs=None) -> None:
            link.send("hook", "on_train_begin")

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            values = {key: float(value) for key, value in (logs or {}).items()}
            link.send("hook", "on_epoch_end", epoch, values)

        def on_train_end(self, logs=None) -> None:
            link.send("hook", "on_train_end")

    logging.getLogger("trainflow.train").info(
        "Worker %d of %d: %s, %d replicas in sync",
        spec.rank,
        spec.workers,
        "MultiWorkerMirroredStrategy" if spec.workers > 1 else "MirroredStrategy",
        strategy.num_replicas_in_sync,
    )
    data, paths = inputs_here(spec)
    chief = spec.rank == 0
    with tempfile.TemporaryDirectory(prefix="trainflow-worker-") as scratch:
        written = RunPaths(run_dir=Path(scratch) / "runs" / spec.paths.name)
        placement = Placement(strategy, spec.rank, spec.workers, written, link)
        extra_callbacks = [HookRelay()] if chief else []
        return fit_from(spec.config, data, paths, spec.state, extra_callbacks, placement=placement)


def serve(spec: WorkerSpec) -> bool:
    """Train as `spec` says, telling the driver how it went; whether it went well (a failure is
    told to the driver, and its traceback printed unless it is the user's to fix)."""
    link = DriverLink(Client(spec.driver, authkey=bytes.fromhex(spec.authkey)))
    link.send("hello", spec.rank)
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
