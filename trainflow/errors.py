"""Errors a user can cause and fix, as opposed to bugs or transient faults.

The CLI prints a `UserInputError` as one line and exits with status 2; Prefect tasks do not retry
them, because running the same bad input again cannot succeed.
"""

import errno
import logging
import os


def error_reason(error: BaseException) -> str:
    """The first line of an exception's message (or its type), to quote in a one-line error."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class UserInputError(Exception):
    """Bad input from the user: the message names the input and the fix."""


class DataSourceError(UserInputError):
    """A dataset source that cannot be read or does not pass validation."""


class RunStateError(UserInputError):
    """A run directory whose saved state does not fit the requested run."""


class DownloadError(DataSourceError):
    """A download that failed, as it does without network: retried (the network may come back),
    then reported like bad input, with what to use instead."""


def is_user_input_error(exception: BaseException) -> bool:
    """True for errors the user fixes, reported as one line (exit status 2)."""
    return isinstance(exception, UserInputError)


def is_one_line_error(exception: BaseException) -> bool:
    """True for errors the CLI reports as one line without a traceback: bad input, and a lost
    lock (its message says all there is to know)."""
    return is_user_input_error(exception) or isinstance(exception, OwnershipLostError)


def is_retryable(exception: BaseException) -> bool:
    """True for errors another attempt may not meet: all but bad input (downloads excepted) and a
    lost lock."""
    if isinstance(exception, OwnershipLostError):
        return False
    return not is_user_input_error(exception) or isinstance(exception, DownloadError)


class StorageError(UserInputError):
    """The disk refused a write: full, read-only, or not ours to write."""


class NonFiniteLossError(UserInputError):
    """Training diverged: the loss became NaN or infinite."""


class UnsafeModelError(UserInputError):
    """A saved model that would run arbitrary code when loaded."""


# Faults of the storage, not of trainflow: retrying cannot help until the user frees or fixes it.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def as_storage_error(error: OSError, path: object) -> StorageError | None:
    """A `StorageError` naming `path` for a full or read-only disk; None for other OS errors."""
    if error.errno not in STORAGE_ERRNOS:
        return None
    reason = error.strerror or os.strerror(error.errno)
    return StorageError(
        f"cannot write {path}: {reason}; free disk space or make the artifacts directory "
        "writable, then run the same command again: it continues from the last checkpoint"
    )


class HideUserErrorTracebacks(logging.Filter):
    """A console handler filter: log records of user errors keep their message and lose the
    traceback (the Prefect UI still gets it); the CLI installs it unless --debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and is_one_line_error(record.exc_info[1]):
            record.exc_info = None
            record.exc_text = None
        return True


def hide_user_error_tracebacks() -> None:
    """Install `HideUserErrorTracebacks` on the root logger's console handlers."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.addFilter(HideUserErrorTracebacks())


class StoreError(UserInputError):
    """An object store the user must fix: a protocol not installed, a missing bucket, refused
    credentials, an endpoint that does not answer when the run starts."""


class StoreUnavailableError(Exception):
    """The object store failed to answer for a while (connection reset, timeout, 5xx, throttling)
    during a run: retried by the task, and never taken for damaged content."""


class OwnershipLostError(Exception):
    """This process lost the lock of the run (or registry) it was writing: another process owns it
    now. Not bad input and not a passing fault: retrying in place would make two owners, so it is
    never retried; this process stops writing and fails with one line naming the new holder."""
