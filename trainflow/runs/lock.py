"""One process at a time per run name, on one machine or many: `locks/<run name>.lock`.

Under a local artifacts root it is an exclusive `flock`: the kernel releases it when its process
dies, however it dies, so a crash cannot leave a run locked. The file's content (who holds it) is
only for the message the next process shows; the file itself stays, since deleting a lock file
while another process opens it breaks the lock.

Under an artifacts root in an object store, processes on other machines share the run, and an
flock on a local mirror would exclude nobody: there it is a lease on the lock's object in the store
(`storage/leases.py`), taken with the store's conditional writes and renewed while the run runs; a
dead holder's lease expires, so a crash cannot leave the run locked for long.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from trainflow.errors import UserInputError, as_storage_error
from trainflow.storage.holders import describe_holder, this_holder
from trainflow.storage.leases import Lease, LeaseHeld
from trainflow.storage.mirror import store_of

# Locks this process holds, by path (a file descriptor, or a lease in a store): a Prefect retry in
# the same process reopens its own run.
_held: dict[Path, int | Lease] = {}


class RunInUseError(UserInputError):
    """Another process is running the run of this name."""


def lock_run(lock_path: Path, run_name: str, run_dir: Path) -> None:
    """Take the run's lock for this process, or raise `RunInUseError` naming the holder. In a
    store, the lease fences every write under `run_dir`: none is made once it is lost."""
    held = _held.get(lock_path)
    if isinstance(held, Lease) and not held.held:
        unlock_run(lock_path)  # lost meanwhile: this attempt must win the lock again
    elif held is not None:
        return
    holder = this_holder()
    remote = store_of(lock_path)
    if remote is not None:
        store, key = remote
        guarded = store_of(run_dir)
        lease = Lease(store.url, key, holder, scope=guarded[1] if guarded else None)
        try:
            lease.acquire()
        except LeaseHeld as error:
            raise _in_use(run_name, str(error)) from None
        _held[lock_path] = lease
        return
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:  # a full or read-only disk is the user's to fix
        raise as_storage_error(error, lock_path) or error from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        description = _describe_holder(lock_path)
        os.close(descriptor)
        raise _in_use(run_name, description) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(holder).encode(), 0)
    _held[lock_path] = descriptor


def holds_lock(lock_path: Path) -> bool:
    """True when this process holds the lock at `lock_path` (a lease: and has not lost it)."""
    held = _held.get(lock_path)
    return held is not None and (not isinstance(held, Lease) or held.held)


def unlock_run(lock_path: Path) -> None:
    """Release the run's lock if this process holds it."""
    held = _held.pop(lock_path, None)
    if isinstance(held, Lease):
        held.release()
    elif held is not None:
        os.close(held)  # closing the descriptor releases the flock


def _in_use(run_name: str, holder: str) -> RunInUseError:
    return RunInUseError(
        f"run {run_name} is in use by {holder}; wait for it to finish (trainflow runs), or give "
        "another --run-name"
    )


def _describe_holder(lock_path: Path) -> str:
    try:
        return describe_holder(json.loads(lock_path.read_text()))
    except (OSError, ValueError):
        return "another process"
