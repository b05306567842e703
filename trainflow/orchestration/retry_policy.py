"""When a failed task is worth another attempt."""

from __future__ import annotations

from typing import Any

from trainflow.errors import is_retryable


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry transient failures (a download, an I/O fault, a bug
    that may not repeat), never bad input."""
    error = state.result(raise_on_failure=False)
    return not isinstance(error, BaseException) or is_retryable(error)


# The retry settings of every stage task that may meet a passing fault: `task(..., retries=N,
# **RETRY_TRANSIENT_FAULTS)`.
RETRY_TRANSIENT_FAULTS: dict[str, Any] = {
    "retry_delay_seconds": 1,
    "retry_condition_fn": retry_if_transient,
}
