"""One process at a time per run name, on one machine or many: `locks/<run name>.lock`.

The lock is the storage's (`Storage.lock`): an flock under a local artifacts root, which the
kernel releases when its process dies; a fenced lease in an object store, which expires when its
holder dies and whose loss stops every write to the run. Either way a crash cannot leave a run
locked for good.
"""

from __future__ import annotations

from trainflow.errors import UserInputError
from trainflow.paths import RunPaths
from trainflow.storage.artifacts import HeldLock, LockHeld

# Locks this process holds, by run directory: a Prefect retry in the same process reopens its own
# run.
_held: dict[str, HeldLock] = {}


class RunInUseError(UserInputError):
    """Another process is running the run of this name."""


def lock_run(paths: RunPaths) -> None:
    """Take the run's lock for this process, or raise `RunInUseError` naming the holder. In a
    store, the lease fences every write to the run: none is made once it is lost."""
    held = _held.get(str(paths.run_dir))
    if held is not None and not held.held:
        unlock_run(paths)  # lost meanwhile: this attempt must win the lock again
    elif held is not None:
        return
    try:
        _held[str(paths.run_dir)] = paths.storage.lock(paths.lock, guarding=paths.run_dir)
    except LockHeld as error:
        raise RunInUseError(
            f"run {paths.name} is in use by {error}; wait for it to finish (trainflow runs), or "
            "give another --run-name"
        ) from None


def holds_lock(paths: RunPaths) -> bool:
    """True when this process holds the run's lock (a lease: and has not lost it)."""
    held = _held.get(str(paths.run_dir))
    return held is not None and held.held


def unlock_run(paths: RunPaths) -> None:
    """Release the run's lock if this process holds it."""
    held = _held.pop(str(paths.run_dir), None)
    if held is not None:
        held.release()
