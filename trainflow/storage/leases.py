"""Locks that hold across machines: leases on an object in the store, taken with conditional writes.

A lease is an object whose content names its holder. It is created only if absent (`If-None-Match:
*`) and renewed every `RENEW_SECONDS` by a background thread, each renewal conditional on the
object being the one this holder last wrote (`If-Match: <ETag>`), so of two processes on two
machines only one can ever hold it. A holder that dies stops renewing: a contender that sees the
object unchanged for `EXPIRY_SECONDS` by the store's own clock (the age of the object, from the
`Date` and `Last-Modified` of one answer, so the machines' clocks do not matter) takes it over with
a write conditional on that stale ETag, which again only one contender can win.

A contender therefore waits at most one renewal period to learn that a live holder is alive (and is
refused, naming it), and at most `EXPIRY_SECONDS` to take over from a dead one.

Conditional writes are part of S3 (and of stores compatible with it, moto's server among them);
other fsspec protocols have no portable equivalent, and `Lease` refuses them, except `memory://`,
which lives in one process: there a lease is a key held in this process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from email.utils import parsedate_to_datetime

from trainflow.errors import StoreError, StoreUnavailableError
from trainflow.storage.stores import ObjectStore

logger = logging.getLogger("trainflow.storage")

# The leases of memory:// stores, which exist in this process only.
_in_process: dict[str, dict] = {}
_in_process_lock = threading.Lock()

RENEW_SECONDS = 5.0
EXPIRY_SECONDS = 20.0
POLL_SECONDS = 1.0


class LeaseHeld(Exception):
    """Another live process holds the lease; the message describes it."""

    def __init__(self, holder: dict) -> None:
        super().__init__(describe_holder(holder))
        self.holder = holder


def describe_holder(holder: dict) -> str:
    try:
        return f"process {holder['pid']} on {holder['hostname']} (since {holder['since']})"
    except (KeyError, TypeError):
        return "another process"


class Lease:
    """An exclusive lease on `key` in `store`, held by this process while `holder` is true."""

    def __init__(self, store: ObjectStore, key: str, holder: dict) -> None:
        if store.protocol not in ("s3", "s3a", "memory"):
            raise StoreError(
                f"store {store.url}: locks across machines need conditional writes, which "
                "trainflow uses on s3:// stores (AWS S3 and S3-compatible servers); use one, or "
                "a local directory"
            )
        self.store = store
        self.key = key
        self.holder = holder
        self.renewals = 0
        self.etag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self, wait: bool = False) -> None:
        """Take the lease, or raise `LeaseHeld` once the holder has shown it is alive (with
        `wait`, keep waiting for it instead)."""
        if self.store.protocol == "memory":
            self._acquire_in_process(wait)
            return
        seen: tuple[str, float] | None = None
        while True:
            if self._create():
                break
            current = self._current()
            if current is None:
                continue  # released meanwhile: try again
            etag, age, holder = current
            if age >= EXPIRY_SECONDS:
                if self._replace(etag):
                    logger.warning(
                        "Took over the lock %s from %s, silent for %.0f s",
                        self.store.url_of(self.key),
                        describe_holder(holder),
                        age,
                    )
                    break
                continue
            if seen is not None and seen[0] != etag and not wait:
                raise LeaseHeld(holder)  # renewed while we watched: its holder is alive
            if seen is None or seen[0] != etag:
                seen = (etag, time.monotonic())
            time.sleep(POLL_SECONDS)
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="trainflow-lease")
        self._renewer.start()

    def _acquire_in_process(self, wait: bool) -> None:
        address = self.store.url_of(self.key)
        while True:
            with _in_process_lock:
                if address not in _in_process:
                    _in_process[address] = self.holder
                    return
                holder = _in_process[address]
            if not wait:
                raise LeaseHeld(holder)
            time.sleep(POLL_SECONDS / 10)

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        if self.store.protocol == "memory":
            with _in_process_lock:
                _in_process.pop(self.store.url_of(self.key), None)
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            self.store.call(
                lambda: self.store.fs.call_s3(
                    "delete_object", **self._address(), IfMatch=self.etag
                ),
                f"release {self.key}",
            )
        except (OSError, StoreUnavailableError) as error:
            # Not ours any more, or the store is away: it expires by itself.
            logger.warning("Could not release the lock %s: %s", self.store.url_of(self.key), error)

    def _content(self) -> bytes:
        # A new body each write, so that each renewal has a new ETag (an MD5 of the content).
        self.renewals += 1
        return json.dumps({**self.holder, "renewal": self.renewals}).encode()

    def _address(self) -> dict:
        bucket, _, key = self.store.path(self.key).partition("/")
        return {"Bucket": bucket, "Key": key}

    def _create(self) -> bool:
        try:
            answer = self.store.call(
                lambda: self.store.fs.call_s3(
                    "put_object", **self._address(), Body=self._content(), IfNoneMatch="*"
                ),
                f"lock {self.key}",
            )
        except FileExistsError:
            return False
        self.etag = answer["ETag"]
        return True

    def _replace(self, etag: str) -> bool:
        try:
            answer = self.store.call(
                lambda: self.store.fs.call_s3(
                    "put_object", **self._address(), Body=self._content(), IfMatch=etag
                ),
                f"lock {self.key}",
            )
        except (FileNotFoundError, OSError):  # changed or removed meanwhile: someone else won
            return False
        self.etag = answer["ETag"]
        return True

    def _current(self) -> tuple[str, float, dict] | None:
        """The lease's ETag, its age by the store's clock, and its holder; None if absent."""
        try:
            answer = self.store.call(
                lambda: self.store.fs.call_s3("head_object", **self._address()),
                f"read {self.key}",
            )
            content = self.store.call(
                lambda: self.store.fs.cat_file(self.store.path(self.key)), f"read {self.key}"
            )
        except FileNotFoundError:
            return None
        served_at = parsedate_to_datetime(answer["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (served_at - answer["LastModified"]).total_seconds()
        try:
            holder = json.loads(content)  # only for the message: it may be a newer holder's
        except ValueError:
            holder = {}
        return answer["ETag"], age, holder

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                if not self._replace(self.etag):
                    logger.error(
                        "Lost the lock %s: another process took it over",
                        self.store.url_of(self.key),
                    )
                    return
            except StoreUnavailableError as error:
                logger.warning(
                    "Could not renew the lock %s: %s", self.store.url_of(self.key), error
                )
