"""Locks that hold across machines: fenced leases on an object in the store, taken with conditional
writes.

A lease is an object whose content names its holder (host, boot, process) and a generation number.
It is created only if absent (`If-None-Match: *`) and renewed every `RENEW_SECONDS` by a
background thread, each renewal conditional on the object being the one this holder last wrote
(`If-Match: <ETag>`), so of two processes only one can hold it. A contender takes it over with a
write conditional on the ETag it saw, which again only one contender can win, and the generation
goes up by one: when the holder released it, at once when the holder is known dead (a process of
this host and boot that is gone), and otherwise when the store's own clock shows it unchanged for
`EXPIRY_SECONDS` (the age of the object, from the `Date` and `Last-Modified` of one answer, so the
machines' clocks do not matter).

The holder counts its lease valid until `EXPIRY_SECONDS - SAFETY_SECONDS` after it *sent* its
latest renewal that the store accepted, and every write of the run asks first (`fencing`): a holder
whose renewals stall stops writing before any contender may take over, and a holder that learns it
was taken over stops at once. A renewal whose answer was lost is recognised by reading the object
back (its body is one this holder sent), so a lost reply never loses the lease. ARCHITECTURE.md
gives the timing argument.

Conditional writes are part of S3 (and of stores compatible with it, moto's server among them);
other fsspec protocols have no portable equivalent, and `Lease` refuses them, except `memory://`,
which lives in one process: there a lease is a key held in this process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from email.utils import parsedate_to_datetime

from fsspec.asyn import sync

from trainflow.errors import OwnershipLostError, StoreError, StoreUnavailableError
from trainflow.storage import fencing
from trainflow.storage.faults import s3_error_of
from trainflow.storage.holders import describe_holder, holder_is_gone
from trainflow.storage.stores import ObjectStore

logger = logging.getLogger("trainflow.storage")

# The leases of memory:// stores, which exist in this process only.
_in_process: dict[str, dict] = {}
_in_process_lock = threading.Lock()

RENEW_SECONDS = 2.0
EXPIRY_SECONDS = 30.0
# Left out of the holder's validity: up to 2 s of the whole-second `Date`/`Last-Modified` headers
# a contender measures the age with, and 6 s for a write that starts in time to land.
SAFETY_SECONDS = 8.0
# One attempt of a lease call (connect, read; botocore does not retry it): a renewal, with its
# read-back (two attempts), gives up within 16 s, well inside the 22 s of validity.
ATTEMPT_TIMEOUTS = (2.0, 3.0)
POLL_SECONDS = 1.0


class LeaseHeld(Exception):
    """Another live process holds the lease; the message describes it."""

    def __init__(self, holder: dict) -> None:
        super().__init__(describe_holder(holder))
        self.holder = holder


class Lease:
    """An exclusive lease on `key` in the store at `url`, guarding the writes under `scope`."""

    def __init__(self, url: str, key: str, holder: dict, scope: str | None = None) -> None:
        self.store = ObjectStore(url, timeouts=ATTEMPT_TIMEOUTS)
        if self.store.protocol not in ("s3", "s3a", "memory"):
            raise StoreError(
                f"store {url}: locks across machines need conditional writes, which trainflow "
                "uses on s3:// stores (AWS S3 and S3-compatible servers); use one, or a local "
                "directory"
            )
        self.key = key
        self.address = self.store.url_of(key)
        self.scope_url = self.store.url_of(scope if scope is not None else key)
        self.holder = {**holder, "token": uuid.uuid4().hex}  # this lease's own mark
        self.generation = 0
        self.etag: str | None = None
        self.valid_until = 0.0  # time.monotonic() after which this holder may not write
        self.lost: str | None = None
        self.last_seen: dict = {}  # the body found when a write of ours did not land
        self._renewal = 0
        self._sent: dict[int, float] = {}  # renewal number -> when it was sent (monotonic)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self, wait: bool = False) -> None:
        """Take the lease, or raise `LeaseHeld` once the holder has shown it is alive (with
        `wait`, keep waiting for it instead)."""
        if self.store.protocol == "memory":
            self._acquire_in_process(wait)
        else:
            self._acquire_in_store(wait)
        fencing.guard(self)

    def _acquire_in_store(self, wait: bool) -> None:
        seen: str | None = None
        while True:
            if self._write(IfNoneMatch="*", generation=1):
                break
            current = self._read()
            if current is None:
                continue  # released by deletion meanwhile: try again
            etag, age, body = current
            reason = _takeover_reason(body, age)
            if reason is not None:
                if self._write(IfMatch=etag, generation=int(body.get("generation", 0)) + 1):
                    if not body.get("released"):
                        logger.warning(
                            "Took over the lock %s from %s, %s",
                            self.address,
                            describe_holder(body),
                            reason,
                        )
                    break
                continue
            if seen is not None and seen != etag and not wait:
                raise LeaseHeld(body)  # renewed while we watched: its holder is alive
            seen = etag
            time.sleep(POLL_SECONDS)
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="trainflow-lease")
        self._renewer.start()

    def _acquire_in_process(self, wait: bool) -> None:
        while True:
            with _in_process_lock:
                if self.address not in _in_process:
                    _in_process[self.address] = self.holder
                    self.valid_until = float("inf")
                    return
                holder = _in_process[self.address]
            if not wait:
                raise LeaseHeld(holder)
            time.sleep(POLL_SECONDS / 10)

    def check(self) -> None:
        """Raise `OwnershipLostError` unless this process still holds the lease with time to
        spare for a write starting now (see the module docstring)."""
        if self.lost is None and time.monotonic() >= self.valid_until:
            self._lose(f"not renewed for {EXPIRY_SECONDS - SAFETY_SECONDS:.0f} s (store stalled)")
        if self.lost is not None:
            raise OwnershipLostError(
                f"lost the lock {self.address}: {self.lost}; this process stopped writing to it"
            )

    @property
    def held(self) -> bool:
        """True while `check` passes."""
        try:
            self.check()
        except OwnershipLostError:
            return False
        return True

    def release(self) -> None:
        """Stop renewing, and mark the lease released if it is still ours (the object stays, so
        that the next holder's generation follows this one's)."""
        fencing.unguard(self)
        if self.store.protocol == "memory":
            with _in_process_lock:
                _in_process.pop(self.address, None)
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.lost is not None:
            return
        try:
            self._write(IfMatch=self.etag, generation=self.generation, released=True)
        except (OSError, StoreError, StoreUnavailableError) as error:  # it expires by itself
            logger.warning("Could not release the lock %s: %s", self.address, error)

    def _write(self, generation: int, released: bool = False, **condition: str) -> bool:
        """Write this holder's body under `condition` (one attempt); True when the lease is ours
        afterwards, read back when the answer was a refusal or did not come (a lost reply)."""
        self._renewal += 1
        body = {**self.holder, "generation": generation, "renewal": self._renewal}
        if released:
            body["released"] = True
        self._sent[self._renewal] = sent = time.monotonic()
        content = json.dumps(body).encode()
        try:
            answer = self.store.call(
                lambda: self.store.fs.call_s3(
                    "put_object", **self._bucket_key(), Body=content, **condition
                ),
                f"lock {self.key}",
                delays=(),  # one attempt: what happened is read back below
            )
        except (FileExistsError, StoreUnavailableError):
            pass  # refused, or no answer: did an earlier attempt, or this one, land after all?
        except OSError as error:
            refusal = s3_error_of(error)
            if refusal is None or refusal[1] != 412:  # only "changed meanwhile" is read back
                raise
        else:
            self._confirm(answer["ETag"], generation, sent)
            return True
        current = self._read()
        return current is not None and self._adopt(*current)

    def _adopt(self, etag: str, age: float, body: dict) -> bool:
        """Take `body` as the lease's state when one of this lease's own writes put it there."""
        sent = self._sent.get(body.get("renewal"))
        if body.get("token") != self.holder["token"] or body.get("released") or sent is None:
            self.last_seen = body
            return False
        self._confirm(etag, int(body["generation"]), sent)
        return True

    def _confirm(self, etag: str, generation: int, sent: float) -> None:
        self.etag, self.generation = etag, generation
        self.valid_until = sent + EXPIRY_SECONDS - SAFETY_SECONDS
        self._sent = {n: t for n, t in self._sent.items() if t >= sent}

    def _read(self) -> tuple[str, float, dict] | None:
        """The lease's ETag, its age by the store's clock, and its body; None if absent. One
        GET, so the three belong to the same version of the object."""
        fs = self.store.fs

        async def get() -> dict:
            answer = await fs._call_s3("get_object", **self._bucket_key())
            return {**answer, "Content": await answer["Body"].read()}

        try:
            answer = self.store.call(lambda: sync(fs.loop, get), f"read {self.key}", (0.5,))
        except FileNotFoundError:
            return None
        content = answer["Content"]
        served_at = parsedate_to_datetime(answer["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (served_at - answer["LastModified"]).total_seconds()
        try:
            body = json.loads(content)
        except ValueError:
            body = {}
        return answer["ETag"], age, body if isinstance(body, dict) else {}

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS) and self.lost is None:
            try:
                if not self._write(IfMatch=self.etag, generation=self.generation):
                    self._lose(f"taken over by {describe_holder(self.last_seen)}")
                    return
            except StoreError as error:
                self._lose(str(error))
                return
            except (OSError, StoreUnavailableError) as error:  # passing: try again next period
                if time.monotonic() >= self.valid_until:
                    self._lose(f"the store did not answer its renewals ({error})")
                    return
                logger.warning("Could not renew the lock %s: %s", self.address, error)

    def _lose(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
            logger.error("Lost the lock %s: %s; stopped writing to it", self.address, reason)

    def _bucket_key(self) -> dict:
        bucket, _, key = self.store.path(self.key).partition("/")
        return {"Bucket": bucket, "Key": key}


def _takeover_reason(body: dict, age: float) -> str | None:
    """Why the lease in `body`, unchanged for `age` seconds, may be taken over; None while its
    holder may be alive."""
    if body.get("released"):
        return "released"
    if holder_is_gone(body):
        return "whose process is gone"
    if age >= EXPIRY_SECONDS:
        return f"silent for {age:.0f} s"
    return None
