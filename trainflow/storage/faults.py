"""Sorting the faults of a store: passing ones (another attempt may not meet them) from the
user's to fix.

The network's faults and the store's 5xx, timeout, conflict and throttling answers are passing; a
store's 4xx answer is not, whatever code it carries (s3fs maps the codes it knows to Python
exceptions and every other one to `EIO`, so the code in the answer decides, not the errno).
"""

from __future__ import annotations

import errno

TRANSIENT_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.EBUSY,
        errno.EAGAIN,
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.EPIPE,
        getattr(errno, "EREMOTEIO", errno.EIO),
    }
)
# S3 error codes that mean "slow down" whatever their HTTP status: another attempt later may pass.
THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestTimeout",
        "ServiceUnavailable",
        "InternalError",
    }
)
# HTTP statuses of a request that may pass when made again: timeout, conflict, too many requests.
TRANSIENT_STATUSES = frozenset({408, 409, 429})


def is_transient(error: BaseException) -> bool:
    """True for faults another attempt may not meet: the network and the store's 5xx answers."""
    if isinstance(
        error,
        (
            FileNotFoundError,
            FileExistsError,
            PermissionError,
            IsADirectoryError,
            NotADirectoryError,
        ),
    ):
        return False
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    answer = s3_error_of(error)
    if answer is not None:  # the store answered: its code and status say what the fault is
        code, status = answer
        return status >= 500 or status in TRANSIENT_STATUSES or code in THROTTLING_CODES
    # botocore and aiohttp faults are judged by their class names (some of them are OSErrors
    # without an errno, some not OSErrors at all).
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & {"NoCredentialsError", "PartialCredentialsError", "ParamValidationError"}:
        return False
    if names & {
        "BotoCoreError",
        "HTTPClientError",
        "ClientPayloadError",
        "ServerTimeoutError",
        "IncompleteRead",
    }:
        return True
    return isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS


def s3_error_of(error: BaseException) -> tuple[str, int] | None:
    """The S3 error code and HTTP status of a store's answer behind `error` (s3fs keeps botocore's
    `ClientError` as the cause); None for faults without an answer (the network)."""
    for candidate in (error, error.__cause__):
        response = getattr(candidate, "response", None)
        if isinstance(response, dict) and "Error" in response:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return str(response["Error"].get("Code", "")), int(status)
    return None
