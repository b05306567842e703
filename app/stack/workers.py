"""The stack's process workers: each a stand-in for a machine of its own.

Worker i works in `<home>/workers/<i>/cwd` with its own HOME (`…/home`, so `~/.keras` and Prefect's
home are its own) and TMPDIR (`…/tmp`), logs to `…/worker.log`, and polls the work pool under the
name `trainflow-worker-<i>`. Its flow runs still find the project: the deployments' pull step
changes into $TRAINFLOW_PROJECT_DIR, which the stack's environment sets.

The workers take no `--limit`: with one, Prefect 3.8's worker dies ("this borrower is already
holding one of this CapacityLimiter's tokens", PrefectHQ/prefect#16806) when a crashed flow run is
retried while the worker still handles the crash, which `prefect flow-run retry` soon after a
crash does.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from app.stack.prefect_server import PREFECT_COMMAND

WORK_POOL = "trainflow-local"
NAME_PREFIX = "trainflow-worker-"


@dataclass(frozen=True)
class WorkerPlace:
    """Where worker `index` (from 1) lives under the stack's home."""

    home: Path
    index: int

    @property
    def name(self) -> str:
        """The worker's name on the work pool."""
        return f"{NAME_PREFIX}{self.index}"

    @property
    def root(self) -> Path:
        """The worker's directory: cwd/, home/, tmp/ and its log."""
        return self.home / "workers" / str(self.index)

    @property
    def log(self) -> Path:
        """Where the worker's output (and its flow runs') goes."""
        return self.root / "worker.log"

    def environment(self, stack_environment: dict[str, str]) -> dict[str, str]:
        """The stack's environment, with this worker's own HOME, TMPDIR and Prefect home."""
        return {
            **stack_environment,
            "HOME": str(self.root / "home"),
            "TMPDIR": str(self.root / "tmp"),
            "PREFECT_HOME": str(self.root / "home" / ".prefect"),
        }


def start_worker(place: WorkerPlace, stack_environment: dict[str, str]) -> int:
    """Start one process worker on the work pool, in a session of its own (it outlives `up`);
    returns its pid, which leads its process group (its flow runs included)."""
    for directory in ("cwd", "home", "tmp"):
        (place.root / directory).mkdir(parents=True, exist_ok=True)
    command = [PREFECT_COMMAND, "worker", "start", "--pool", WORK_POOL, "--name", place.name]
    with place.log.open("a") as log:
        worker = subprocess.Popen(
            command,
            cwd=place.root / "cwd",
            env=place.environment(stack_environment),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return worker.pid


def worker_places(home: Path, count: int) -> list[WorkerPlace]:
    """The places of workers 1..count."""
    return [WorkerPlace(home, index) for index in range(1, count + 1)]
