"""When a failed task is worth another attempt."""

from __future__ import annotations

from typing import Any

from trainflow.errors import is_user_input_error


def retry_unless_user_input_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry transient failures, never bad input."""
    error = state.result(raise_on_failure=False)
    return not (isinstance(error, BaseException) and is_user_input_error(error))
