"""Who holds a lock: this process, described so that a contender can tell whether it is alive.

A holder names its host, the host's boot (Linux's boot id) and its process (pid and start time, so
that a pid used again by another process after a reboot or a wrap-around is not taken for it). A
contender on the same host and boot knows for certain whether that process still runs; on another
host it cannot, and waits for the lease to expire.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from pathlib import Path


def this_holder() -> dict:
    """The description of this process a lock records."""
    return {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "boot": _boot_id(),
        "started": _process_start(os.getpid()),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def describe_holder(holder: dict) -> str:
    try:
        return f"process {holder['pid']} on {holder['hostname']} (since {holder['since']})"
    except (KeyError, TypeError):
        return "another process"


def holder_is_gone(holder: dict) -> bool:
    """True only when `holder` is certainly dead: a process of this host and boot that no longer
    runs (or whose pid is now another process's). False when unknown."""
    boot = _boot_id()
    if boot is None or holder.get("hostname") != socket.gethostname() or holder.get("boot") != boot:
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    started = _process_start(pid)
    return started is None or started != holder.get("started")


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields count from its end.
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] == "Z" else int(fields[19])  # a zombie has ended: only unreaped
