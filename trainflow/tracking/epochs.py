"""Each epoch in the MLflow run exactly once.

An MLflow metric point is identified by its key, step, timestamp and value: the same step sent
again with a new timestamp is a second point. So an epoch's metrics carry the time the epoch ended,
committed with its checkpoint (`ResumeState.epoch_ends_ms`), and are sent only when the run does
not have them yet: a retried request adds nothing (the server keeps one copy of identical points),
and an epoch trained again after a crash is not sent again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from trainflow.checkpoints.state import ResumeState
from trainflow.errors import error_reason
from trainflow.tracking.connection import REQUEST_SETTINGS, client_for
from trainflow.tracking.identity import TrackedRun

logger = logging.getLogger("trainflow.tracking")

BATCH_SIZE = 1000  # MLflow's limit of metrics per log_batch request


def epoch_points(history: dict[str, list[float]], ends_ms: list[int]) -> list[Any]:
    """The metric points of `history`, step = the epoch's number (from 1)."""
    from mlflow.entities import Metric

    return [
        # Epochs of a checkpoint from before the end times were kept get a fixed one.
        Metric(key, value, ends_ms[index] if index < len(ends_ms) else index + 1, index + 1)
        for key, values in history.items()
        for index, value in enumerate(values)
    ]


class EpochLog:
    """The epochs an MLflow run holds, read from the server once, and the rest sent to it."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.logged: dict[str, set[int]] = {}  # the steps the run holds, by metric

    def send(self, history: dict[str, list[float]], ends_ms: list[int]) -> int:
        """Send the epochs of `history` the run does not hold; how many points were sent."""
        return self._send_missing(epoch_points(history, ends_ms))

    def send_at(self, step: int, timestamp_ms: int, values: dict[str, float]) -> int:
        """Send `values` at `step` unless the run holds them at that step."""
        from mlflow.entities import Metric

        points = [Metric(key, value, timestamp_ms, step) for key, value in values.items()]
        return self._send_missing(points)

    def _send_missing(self, points: list[Any]) -> int:
        for key in {point.key for point in points} - self.logged.keys():
            steps = {point.step for point in self.client.get_metric_history(self.run_id, key)}
            self.logged[key] = steps
        points = [point for point in points if point.step not in self.logged[point.key]]
        for start in range(0, len(points), BATCH_SIZE):
            batch = points[start : start + BATCH_SIZE]
            self.client.log_batch(self.run_id, metrics=batch)
            for point in batch:
                self.logged[point.key].add(point.step)
        return len(points)


class EpochSender:
    """Sends the epochs of each committed checkpoint from a thread of its own, so that training
    never waits for the tracking server. What it cannot send (the server does not answer, or the
    process dies first) goes with the next checkpoint, at the end of the run
    (`finish_tracked_run`), or with the attempt that resumes the run.

    `send` is `CheckpointWriter`'s `on_commit`: it only hands the state over."""

    def __init__(self, tracked: TrackedRun) -> None:
        self.log = EpochLog(client_for(tracked.uri), tracked.run_id)
        self.uri = tracked.uri
        self.latest: ResumeState | None = None
        self.closing = False
        self.failing = False
        self.condition = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="trainflow-tracking", daemon=True)

    def __enter__(self) -> EpochSender:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self.condition:
            self.closing = True
            self.condition.notify()
        # The last checkpoint's epochs, unless the server is down: the end of the run sends them.
        self.thread.join(timeout=3 * float(REQUEST_SETTINGS["MLFLOW_HTTP_REQUEST_TIMEOUT"]))

    def send(self, state: ResumeState) -> None:
        """Queue the epochs of a committed checkpoint (a newer one replaces one not sent yet)."""
        with self.condition:
            self.latest = state
            self.condition.notify()

    def _run(self) -> None:
        while True:
            with self.condition:
                self.condition.wait_for(lambda: self.latest is not None or self.closing)
                state, self.latest = self.latest, None
                if state is None:
                    return
            try:
                self.log.send(state.history, state.epoch_ends_ms)
            except Exception as error:  # the server may answer again: the next commit retries
                if not self.failing:
                    logger.warning(
                        "MLflow tracking server %s did not take the epochs (%s); training goes "
                        "on, and they are sent when it answers again",
                        self.uri,
                        error_reason(error),
                    )
                self.failing = True
            else:
                if self.failing:
                    logger.info("MLflow tracking server %s answers again", self.uri)
                self.failing = False
