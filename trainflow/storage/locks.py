"""Locks on artifacts, one interface for both kinds of artifacts root.

Under a local root a lock is an exclusive `flock` on its file: the kernel releases it when its
process dies, however it dies, so a crash cannot leave anything locked. The file's content (who
holds it) is only for the message the next process shows; the file itself stays, since deleting a
lock file while another process opens it breaks the lock.

Under a root in an object store, processes on other machines share the artifacts and an flock on
this process's scratch would exclude nobody: there a lock is a fenced lease on the lock's object
(`leases.py`), whose loss stops every write under the directory it guards.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from trainflow.errors import as_storage_error
from trainflow.storage.holders import describe_holder, this_holder
from trainflow.storage.leases import Lease, LeaseHeld
from trainflow.storage.mirror import store_of


class LockHeld(Exception):
    """Another live process holds the lock; the message describes it."""


class HeldLock:
    """A lock this process holds: a lease in a store, or an flock's file descriptor."""

    def __init__(self, lease: Lease | None = None, descriptor: int | None = None) -> None:
        self.lease = lease
        self.descriptor = descriptor

    @property
    def held(self) -> bool:
        """False once a lease is lost (an flock is held until released)."""
        return self.lease.held if self.lease is not None else self.descriptor is not None

    @property
    def generation(self) -> int | None:
        """The lease's generation: one more than the previous holder's (None for an flock)."""
        return self.lease.generation if self.lease is not None else None

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
        elif self.descriptor is not None:
            os.close(self.descriptor)  # closing the descriptor releases the flock
            self.descriptor = None


def take_lock(lock_path: Path, guarding: Path | None, wait: bool) -> HeldLock:
    """Take the lock at `lock_path` (waiting for it with `wait`, else raising `LockHeld`). In a
    store, the lease fences every write under `guarding`: none is made once it is lost."""
    remote = store_of(lock_path)
    if remote is not None:
        store, key = remote
        scope = store_of(guarding) if guarding is not None else None
        lease = Lease(store.url, key, this_holder(), scope=scope[1] if scope else None)
        try:
            lease.acquire(wait=wait)
        except LeaseHeld as error:
            raise LockHeld(str(error)) from None
        return HeldLock(lease=lease)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:  # a full or read-only disk is the user's to fix
        raise as_storage_error(error, lock_path) or error from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(descriptor)
        raise LockHeld(_describe_local_holder(lock_path)) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(this_holder()).encode(), 0)
    return HeldLock(descriptor=descriptor)


def _describe_local_holder(lock_path: Path) -> str:
    try:
        return describe_holder(json.loads(lock_path.read_text()))
    except (OSError, ValueError):
        return "another process"
