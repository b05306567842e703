"""Which writes this process may still make: every lease it holds guards the keys of its scope.

`ObjectStore` asks `check_write` before each attempt of each write (a PUT or a delete); a lease
that is lost, or that may expire before the write lands, raises `OwnershipLostError` there, so a
process that is no longer the owner of a run never writes to it, whatever code path writes. The
checkpoint writer asks too before it starts a commit, so that training stops there.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Guard(Protocol):
    """A lease as the fence sees it (`leases.Lease`)."""

    scope_url: str
    generation: int

    def check(self) -> None:
        """Raise `OwnershipLostError` unless a write starting now lands while the lease holds."""


_guards: list[Guard] = []
_changing = threading.Lock()


def guard(lease: Guard) -> None:
    """From now on, writes under `lease.scope_url` need `lease` to be valid."""
    with _changing:
        _guards.append(lease)


def unguard(lease: Guard) -> None:
    with _changing:
        if lease in _guards:
            _guards.remove(lease)


def check_write(url: str) -> None:
    """Raise `OwnershipLostError` if a lease guarding the object at `url` is no longer valid."""
    for lease in tuple(_guards):
        if _covers(lease.scope_url, url):
            lease.check()


def generation_of(url: str) -> int | None:
    """The generation of the lease of this process guarding the object at `url`, if any."""
    for lease in tuple(_guards):
        if _covers(lease.scope_url, url):
            return lease.generation
    return None


def _covers(scope_url: str, url: str) -> bool:
    return url == scope_url or url.startswith(scope_url.rstrip("/") + "/")
