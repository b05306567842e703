"""Telling whether a process of the stack runs, and stopping a process group it leads."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

STOP_TIMEOUT = 30


def is_alive(pid: int) -> bool:
    """True while process `pid` runs; an exited one not yet reaped by its parent (a zombie) does
    not count."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process (PostgreSQL runs as `postgres`): it exists
    stat = Path(f"/proc/{pid}/stat")
    try:
        # The state follows the command name in parentheses, which may itself hold spaces.
        return stat.read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): os.kill's answer stands


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` s for process `pid` to end; True if it did."""
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def stop_group(pid: int, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM the process group `pid` leads; SIGKILL it if its leader is still there after
    `timeout` s. Whether the leader ended by itself."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    ended = wait_for_exit(pid, timeout)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return ended
