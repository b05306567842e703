"""Object stores behind URLs (`s3://bucket/prefix`, `memory://…`, any installed fsspec protocol).

`ObjectStore` wraps one fsspec file system rooted at a URL. Every call goes through `_retrying`:
a transient fault (connection refused or reset, timeout, 5xx, throttling) is retried with backoff
and, if it lasts, raised as `StoreUnavailableError` (a passing fault the task retries); a missing
bucket or refused credentials are `StoreError`s naming the store and the fix. Nothing here ever
reports a fault as missing or damaged content.

Credentials and the endpoint come from the standard environment (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION` for s3), so any S3-compatible
service works; they are never stored in or printed with a URL.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from trainflow.errors import StoreError, StoreUnavailableError, error_reason
from trainflow.storage.faults import is_transient, s3_error_of
from trainflow.storage.fencing import check_write

logger = logging.getLogger("trainflow.storage")

T = TypeVar("T")

# Backoff between attempts at a transient fault: about half a minute in all, enough for a store
# that restarts, short enough that a dead one fails the task (which Prefect retries) soon.
RETRY_DELAYS = (0.5, 1, 2, 4, 8, 16)
# Before a run starts, a store that does not answer is more likely misconfigured than restarting:
# the user hears about it in seconds.
CHECK_DELAYS = (0.5, 1)
# Timeouts of one attempt (connect, read) of an ordinary call. An attempt is one HTTP request:
# neither botocore nor s3fs retries it (each would resend a write without asking the fence);
# `ObjectStore.call` retries, and checks the fence before each attempt.
DEFAULT_TIMEOUTS = (5.0, 60.0)
# Packages that provide the common protocols, for the error when one is missing.
PROTOCOL_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
}


class ObjectStore:
    """The objects under one URL root, addressed by `/`-separated keys relative to it."""

    def __init__(
        self,
        url: str,
        timeouts: tuple[float, float] = DEFAULT_TIMEOUTS,
    ) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.username or parts.password:
            raise StoreError(
                f"store {_redacted(self.url)}: put credentials in the environment "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), not in the URL"
            )
        self.protocol = parts.scheme
        self.fs = _filesystem(self.protocol, self.url, timeouts)
        self.root = self.fs._strip_protocol(self.url).rstrip("/")  # e.g. memory:// adds a "/"

    def path(self, key: str) -> str:
        """The file system path of `key` (no protocol)."""
        return f"{self.root}/{key}" if key else self.root

    def url_of(self, key: str) -> str:
        return f"{self.url}/{key}" if key else self.url

    def check(self) -> None:
        """Fail with a one-line `StoreError` unless the store answers and its root can be listed:
        called before a run touches anything, so what the user must fix is reported at once."""
        try:
            if self.protocol in ("s3", "s3a"):
                bucket = self.root.split("/", 1)[0]
                self.call(
                    lambda: self.fs.call_s3("head_bucket", Bucket=bucket), "reach", CHECK_DELAYS
                )
            else:
                self.call(lambda: self.fs.ls(self.path(""), detail=False), "reach", CHECK_DELAYS)
        except FileNotFoundError:
            if self.protocol in ("s3", "s3a"):
                raise StoreError(
                    f"store {self.url}: bucket {bucket!r} does not exist; create it (e.g. `aws s3 "
                    f"mb s3://{bucket}`) or fix the URL"
                ) from None
        except StoreUnavailableError as error:
            raise StoreError(
                f"cannot reach the store {self.url} ({error_reason(error.__cause__)}); "
                f"check {_endpoint_hint(self.protocol)} and that the store is running"
            ) from None

    def call(
        self,
        operation: Callable[[], T],
        what: str,
        delays: tuple[float, ...] = RETRY_DELAYS,
        writes: str | None = None,
    ) -> T:
        """Run `operation`, retrying transient faults after each of `delays` seconds; see the
        module docstring. An operation that `writes` a key is fenced: each attempt starts only
        while every lease of this process guarding that key is valid (`fencing.check_write`)."""
        for attempt, delay in enumerate((*delays, None)):
            if writes is not None:
                check_write(self.url_of(writes))
            try:
                return operation()
            except PermissionError as error:
                raise StoreError(
                    f"store {self.url} refused the credentials ({error_reason(error)}); set "
                    f"{_credentials_hint(self.protocol)} for it"
                ) from None
            except Exception as error:
                if type(error).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
                    raise StoreError(
                        f"store {self.url}: no credentials found; set "
                        f"{_credentials_hint(self.protocol)}"
                    ) from None
                if not is_transient(error):
                    refusal = s3_error_of(error)
                    if refusal and isinstance(error, OSError) and error.errno == errno.EIO:
                        # A code s3fs does not know (it makes them all EIO): access, signature,
                        # quota or a store's own. Not a fault to wait out: the user's to fix.
                        raise StoreError(
                            f"store {self.url} refused to {what}: {refusal[0] or 'no code'} "
                            f"(HTTP {refusal[1]}); check the store's permissions, quota and "
                            f"{_credentials_hint(self.protocol)}"
                        ) from None
                    raise
                if delay is None:
                    raise StoreUnavailableError(
                        f"store {self.url} did not answer ({what}, {attempt + 1} attempts): "
                        f"{error_reason(error)}"
                    ) from error
                # Quiet while checking a store before a run: its error alone says it all.
                logger.log(
                    logging.DEBUG if delays is CHECK_DELAYS else logging.WARNING,
                    "Store %s failed to %s (%s); trying again in %s s",
                    self.url,
                    what,
                    error_reason(error),
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def put_file(self, local: Path, key: str) -> None:
        self.call(lambda: self.fs.put_file(str(local), self.path(key)), f"write {key}", writes=key)

    def put_bytes(self, data: bytes, key: str) -> None:
        """Write `data` as the object `key` (one PUT: whole or not at all)."""
        self.call(lambda: self.fs.pipe_file(self.path(key), data), f"write {key}", writes=key)

    def read_bytes(self, key: str) -> bytes:
        return self.call(lambda: self.fs.cat_file(self.path(key)), f"read {key}")

    def get_file(self, key: str, local: Path) -> None:
        """Download `key` to `local` whole or not at all (a temporary name, then a rename)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.download-{os.getpid()}")
        try:
            self.call(lambda: self.fs.get_file(self.path(key), str(partial)), f"read {key}")
            os.replace(partial, local)
        finally:
            partial.unlink(missing_ok=True)

    def keys(self, prefix: str) -> list[str]:
        """Keys of every object under `prefix` (recursively), relative to the root."""
        base = self.path(prefix).rstrip("/")
        try:
            found = self.call(lambda: self.fs.find(base), f"list {prefix}")
        except FileNotFoundError:
            return []
        # A file's own key is in what `find` returns for it: fetching one file goes this way too.
        return sorted(path[len(self.root) + 1 :] for path in found if path != self.root)

    def remove(self, key: str, tree: bool = True) -> None:
        """Remove the object `key`, and with `tree` every object under it (a listing first: one
        request more); a missing one is not an error."""
        path = self.path(key)
        try:
            self.call(
                (lambda: self.fs.rm(path, recursive=True))
                if tree
                else lambda: self.fs.rm_file(path),
                f"remove {key}",
                writes=key,
            )
        except FileNotFoundError:
            pass


def _filesystem(protocol: str, url: str, timeouts: tuple[float, float]):
    import fsspec

    try:
        cls = fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as error:
        package = PROTOCOL_PACKAGES.get(protocol)
        fix = (
            f"install {package} (pip install {package})"
            if package
            else "install its fsspec package"
        )
        known = protocol in fsspec.available_protocols()
        raise StoreError(
            f"store {url}: the {protocol}:// protocol is not "
            f"{'installed' if known else 'known to fsspec'}; {fix}, or use a local directory"
        ) from error
    options: dict = {"skip_instance_cache": True, "use_listings_cache": False}
    if protocol in ("s3", "s3a"):
        # One request an attempt: no retries of botocore's own (see DEFAULT_TIMEOUTS).
        options["config_kwargs"] = {
            "connect_timeout": timeouts[0],
            "read_timeout": timeouts[1],
            "retries": {"max_attempts": 0},
        }
    filesystem = cls(**options)
    if protocol in ("s3", "s3a"):
        filesystem.retries = 1  # s3fs's own retries of an attempt: one try, no retry
    return filesystem


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return (
        url.replace(parts.netloc, parts.hostname or "") if parts.password or parts.username else url
    )


def _endpoint_hint(protocol: str) -> str:
    if protocol in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        return (
            f"AWS_ENDPOINT_URL (now {endpoint})"
            if endpoint
            else "AWS_ENDPOINT_URL (not set: AWS itself)"
        )
    return "the store's address"


def _credentials_hint(protocol: str) -> str:
    if protocol in ("s3", "s3a"):
        return "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    return "the store's credentials"
