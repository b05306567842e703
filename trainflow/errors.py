"""Errors a user can cause and fix, as opposed to bugs or transient faults.

The CLI prints a `UserInputError` as one line and exits with status 2; Prefect tasks do not retry
them, because running the same bad input again cannot succeed.
"""


class UserInputError(Exception):
    """Bad input from the user: the message names the input and the fix."""


class DataSourceError(UserInputError):
    """A dataset source that cannot be read or does not pass validation."""


class RunStateError(UserInputError):
    """A run directory whose saved state does not fit the requested run."""


def is_user_input_error(exception: BaseException) -> bool:
    """True for errors that retrying cannot fix."""
    return isinstance(exception, UserInputError)
