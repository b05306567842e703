"""The run record (`run.json`): what a run is, how far it got, and whether it is still alive."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from trainflow.config import RunConfig
from trainflow.contract import PixelRange
from trainflow.errors import RunStateError
from trainflow.paths import RECORD_FILE, ArtifactPaths, RunPaths
from trainflow.results import Distribution
from trainflow.runs.lock import holds_lock, lock_run, unlock_run

logger = logging.getLogger("trainflow.runs")

# `damaged`: only in listings, for a run whose record does not parse.
RunStatus = Literal["running", "completed", "failed", "interrupted", "damaged"]


class RunRecord(BaseModel):
    """The content of `run.json`."""

    run_name: str
    status: RunStatus
    config: dict[str, Any]
    flow_run_id: str | None
    # The flow run's page in the Prefect UI; None when its server did not outlive the run.
    flow_run_url: str | None = None
    # The run's MLflow run, when it is tracked (every attempt continues it), and its page.
    mlflow_run_id: str | None = None
    mlflow_run_url: str | None = None
    pid: int
    hostname: str
    started_at: str
    updated_at: str
    epochs_completed: int | None = None
    resumed_from: int | None = None
    test_accuracy: float | None = None
    pixels: PixelRange | None = None  # the pixel range the model was fed, once it is known
    data_input: Literal["memory", "stream"] | None = None  # how training read the data, once known
    distribution: Distribution | None = None  # how training was spread, once known
    error: str | None = None
    # The generation of the lease its latest writer held on the run (in a store; None locally):
    # a record, like a checkpoint manifest, says which owner of the run wrote it.
    lock_generation: int | None = None


def default_run_name(flow_run_name: str, flow_run_id: str) -> str:
    """A new, unique run name, stable across retries of the same flow run."""
    return f"{flow_run_name}-{flow_run_id[:8]}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_record(paths: RunPaths) -> RunRecord | None:
    """The run's record, or None when the run has none.

    A record that does not parse raises `RunStateError` naming the file; an error reading it is
    raised as it is (a passing fault, retried): neither may pass for a run without a record.
    """
    return _parsed_record(paths, paths.storage.local_copy(paths.record))


def _parsed_record(paths: RunPaths, local: Path) -> RunRecord | None:
    try:
        content = local.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return RunRecord.model_validate_json(content)
    except ValidationError as error:
        raise RunStateError(
            f"{paths.record} is damaged ({error.errors()[0]['msg']}); move it aside to start the "
            "run over, or give another --run-name"
        ) from error


def write_record(paths: RunPaths, record: RunRecord) -> None:
    """Replace the run's record atomically."""
    generation = paths.storage.owner_generation(paths.record)
    record = record.model_copy(update={"updated_at": _now(), "lock_generation": generation})
    paths.storage.write_json(paths.record, record.model_dump())


def open_run(
    config: RunConfig, run_name: str, flow_run_id: str | None, flow_run_url: str | None = None
) -> RunPaths:
    """Create or reopen the run directory and mark the run as running (by the flow run
    `flow_run_id`, whose UI page is `flow_run_url`).

    With `config.fresh`, the run's earlier outputs are removed, except when the same flow run is
    opening it again (a retry of that flow run must resume, not start over a second time).
    """
    paths = ArtifactPaths.at(config.artifacts).run(run_name)
    lock_run(paths)  # before anything of the run is touched
    paths.storage.refresh(paths.run_dir)  # a run in an object store: what other machines left
    previous = _parsed_record(paths, paths.record)  # refreshed just now, with the whole run
    if (
        config.fresh
        and paths.run_dir.exists()
        and (previous is None or previous.flow_run_id != flow_run_id)
    ):
        paths.storage.remove(paths.run_dir)
        previous = None
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    logger.info(
        "Run %s in %s (to resume it after a failure: trainflow run --run-name %s)",
        run_name,
        paths.location,
        run_name,
    )
    write_record(
        paths,
        RunRecord(
            run_name=run_name,
            status="running",
            config=config.model_dump(mode="json"),
            flow_run_id=flow_run_id,
            flow_run_url=flow_run_url,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=previous.started_at if previous else _now(),
            updated_at=_now(),
            epochs_completed=previous.epochs_completed if previous else None,
            mlflow_run_id=previous.mlflow_run_id if previous else None,
            mlflow_run_url=previous.mlflow_run_url if previous else None,
        ),
    )
    return paths


def record_tracking(paths: RunPaths, mlflow_run_id: str, mlflow_run_url: str | None) -> None:
    """Note the run's MLflow run in its record."""
    record = read_record(paths)
    if record is not None:
        update = {"mlflow_run_id": mlflow_run_id, "mlflow_run_url": mlflow_run_url}
        write_record(paths, record.model_copy(update=update))


def close_run(paths: RunPaths, **results: Any) -> None:
    """Mark the run completed with its results (epochs_completed, resumed_from, test_accuracy,
    pixels, data_input, distribution) and release its lock."""
    record = read_record(paths)
    if record is not None:
        write_record(
            paths, record.model_copy(update={"status": "completed", "error": None, **results})
        )
    unlock_run(paths)


def fail_run(paths: RunPaths, error: str, also: Callable[[RunRecord], None] | None = None) -> None:
    """Mark the run failed with a one-line reason, call `also` with its record (still holding the
    lock), and release the lock; nothing but releasing it when this process does not hold the lock
    (another process runs the run, or took it over)."""
    if not holds_lock(paths):
        unlock_run(paths)
        return
    try:
        record = read_record(paths)
        if record is not None:
            write_record(paths, record.model_copy(update={"status": "failed", "error": error}))
            if also is not None:
                also(record)
    except RunStateError:
        pass  # a damaged record is what the run failed on: its error says so already
    finally:
        unlock_run(paths)


def list_runs(artifacts: ArtifactPaths) -> list[RunRecord]:
    """All runs under `artifacts`, oldest first; a running run whose process is gone is interrupted."""
    artifacts.storage.refresh(artifacts.runs_dir, only=RECORD_FILE)  # the records, not the runs
    if not artifacts.runs_dir.is_dir():
        return []
    records = []
    for run_dir in sorted(artifacts.runs_dir.iterdir()):
        try:
            run = RunPaths(run_dir=run_dir)
            record = _parsed_record(run, run.record)  # refreshed above, with every other record
        except RunStateError as error:
            record = _damaged_record(run_dir.name, str(error))
        if record is not None:
            if record.status == "running" and not _process_alive(record):
                record = record.model_copy(update={"status": "interrupted"})
            records.append(record)
    return sorted(records, key=lambda record: record.started_at)


def _damaged_record(run_name: str, error: str) -> RunRecord:
    """What a listing shows of a run whose record does not parse: its name and the problem."""
    return RunRecord(
        run_name=run_name,
        status="damaged",
        config={},
        flow_run_id=None,
        pid=0,
        hostname="",
        started_at="",
        updated_at="",
        error=error,
    )


def _process_alive(record: RunRecord) -> bool:
    if record.hostname != socket.gethostname():
        return True  # another machine's process: assume it still runs
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
