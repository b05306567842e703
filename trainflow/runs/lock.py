"""One process at a time per run name: an exclusive `flock` on `locks/<run name>.lock`.

The kernel releases an flock when its process dies, however it dies, so a crash cannot leave a run
locked. The file's content (who holds it) is only for the message the next process shows; the
file itself stays, since deleting a lock file while another process opens it breaks the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from trainflow.errors import UserInputError, as_storage_error

# Lock files this process holds, by path: a Prefect retry in the same process reopens its own run.
_held: dict[Path, int] = {}


class RunInUseError(UserInputError):
    """Another process is running the run of this name."""


def lock_run(lock_path: Path, run_name: str) -> None:
    """Take the run's lock for this process, or raise `RunInUseError` naming the holder."""
    if lock_path in _held:
        return
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:  # a full or read-only disk is the user's to fix
        raise as_storage_error(error, lock_path) or error from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe_holder(lock_path)
        os.close(descriptor)
        raise RunInUseError(
            f"run {run_name} is in use by {holder}; wait for it to finish (trainflow runs), or "
            "give another --run-name"
        ) from None
    holder = {"pid": os.getpid(), "hostname": socket.gethostname(), "since": _now()}
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(holder).encode(), 0)
    _held[lock_path] = descriptor


def holds_lock(lock_path: Path) -> bool:
    """True when this process holds the lock at `lock_path`."""
    return lock_path in _held


def unlock_run(lock_path: Path) -> None:
    """Release the run's lock if this process holds it."""
    descriptor = _held.pop(lock_path, None)
    if descriptor is not None:
        os.close(descriptor)  # closing the descriptor releases the flock


def _describe_holder(lock_path: Path) -> str:
    try:
        holder = json.loads(lock_path.read_text())
        return f"process {holder['pid']} on {holder['hostname']} (since {holder['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
