"""Fenced leases on a real S3-compatible store (moto's server on 127.0.0.1), reached through a link
the tests break (tests/link_proxy.py): a lost reply never loses a lease, a holder cut off from the
store stops writing before anyone may take over, a holder known dead is taken over at once and a
live one never, and the store's refusals are sorted by their code.

The lease's timing constants are shortened here (the ratios kept) so that an expiry takes seconds;
tests/test_split_brain.py runs the real ones end to end.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.link_proxy import LinkProxy
from tests.s3_server import S3Server
from trainflow.errors import OwnershipLostError, StoreError, StoreUnavailableError
from trainflow.storage import leases
from trainflow.storage.leases import Lease, LeaseHeld
from trainflow.storage.stores import ObjectStore

TIMEOUT = 120


@pytest.fixture(autouse=True)
def quick_leases(monkeypatch):
    """Expiry 6 s, renewals every 0.4 s, 2 s of safety: the real ones divided by five."""
    monkeypatch.setattr(leases, "EXPIRY_SECONDS", 6.0)
    monkeypatch.setattr(leases, "RENEW_SECONDS", 0.4)
    monkeypatch.setattr(leases, "SAFETY_SECONDS", 2.0)
    monkeypatch.setattr(leases, "POLL_SECONDS", 0.2)


@pytest.fixture
def aws(s3_store: S3Server, monkeypatch) -> pytest.MonkeyPatch:
    """This process pointed at the store directly; `aws.setenv("AWS_ENDPOINT_URL", link)` sends
    what is created afterwards through a link."""
    for name, value in s3_store.environment.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def holder(name: str) -> dict:
    return {"pid": 0, "hostname": name, "since": "now"}


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stored(s3_store: S3Server, bucket: str, key: str) -> dict:
    return json.loads(s3_store.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def is_put_of(key: str):
    return lambda method, path: method == "PUT" and path.endswith(key)


def test_a_lost_reply_to_a_renewal_or_a_creation_does_not_lose_the_lease(
    s3_store: S3Server, bucket: str, aws
):
    with LinkProxy(s3_store.endpoint) as link:
        aws.setenv("AWS_ENDPOINT_URL", link.endpoint)
        if True:
            lease = Lease(f"s3://{bucket}", "run.lock", holder("a"), scope="run")
            link.lose_reply_once(is_put_of("run.lock"))  # the creation's answer
            started = time.monotonic()
            lease.acquire()
            assert time.monotonic() - started < leases.EXPIRY_SECONDS  # not waiting on itself
            link.lose_reply_once(is_put_of("run.lock"))  # the next renewal's answer
            puts = len(link.writes_under(f"/{bucket}/run.lock"))
            wait_for(lambda: len(link.writes_under(f"/{bucket}/run.lock")) >= puts + 4, "renewals")
            lease.check()
            assert lease.lost is None
            body = stored(s3_store, bucket, "run.lock")
            assert body["token"] == lease.holder["token"] and body["generation"] == 1
            lease.release()
    assert stored(s3_store, bucket, "run.lock")["released"] is True


def test_a_holder_cut_off_from_the_store_stops_writing_before_a_contender_takes_over(
    s3_store: S3Server, bucket: str, aws
):
    url = f"s3://{bucket}/team"
    with LinkProxy(s3_store.endpoint) as link:
        aws.setenv("AWS_ENDPOINT_URL", link.endpoint)
        cut_off = Lease(url, "locks/run.lock", holder("a"), scope="runs/run")
        cut_off.acquire()
        writer = ObjectStore(url)  # this process's store, through the same link
        aws.setenv("AWS_ENDPOINT_URL", s3_store.endpoint)
        contender = Lease(url, "locks/run.lock", holder("b"), scope="runs/run")
        took_over: list[float] = []
        link.stall()
        # The contender watches the lease from the moment the link stalls, as machine B would.
        racing = threading.Thread(
            target=lambda: (contender.acquire(wait=True), took_over.append(time.monotonic()))
        )
        racing.start()
        wait_for(lambda: not cut_off.held, "the stalled holder to give up its lease")
        gave_up = time.monotonic()
        with pytest.raises(OwnershipLostError, match="lost the lock s3://.*locks/run.lock"):
            writer.remove("runs/run/checkpoint")  # no write of the run starts any more
        racing.join(TIMEOUT)
        assert took_over and gave_up < took_over[0]
        assert contender.generation == 2
        link.resume()
        wait_for(lambda: cut_off._renewer is None or not cut_off._renewer.is_alive(), "renewer")
        writer.put_file(Path(__file__), "elsewhere/file")  # keys the lease does not guard
        with pytest.raises(OwnershipLostError):
            writer.put_file(Path(__file__), "runs/run/late")
        cut_off.release()  # must not touch the new holder's lease
        assert stored(s3_store, bucket, "team/locks/run.lock")["hostname"] == "b"
        assert contender.held
        contender.release()
    assert not [r for r in link.writes_under(f"/{bucket}/team/runs/") if r.received >= gave_up]


def test_a_holder_that_learns_it_was_taken_over_names_the_new_holder(
    s3_store: S3Server, bucket: str, aws
):
    first = Lease(f"s3://{bucket}", "run.lock", holder("host-a"), scope="run")
    first.acquire()
    client = s3_store.client()  # someone overwrites the lease, as a takeover would
    client.put_object(
        Bucket=bucket,
        Key="run.lock",
        Body=b'{"pid": 7, "hostname": "host-b", "since": "then", "generation": 2}',
    )
    wait_for(lambda: first.lost is not None, "the renewal to find the lease taken")
    with pytest.raises(OwnershipLostError) as lost:
        first.check()
    assert "taken over by process 7 on host-b (since then)" in str(lost.value)
    assert "\n" not in str(lost.value)
    first.release()  # leaves the new holder's lease alone
    assert (
        json.loads(s3_store.client().get_object(Bucket=bucket, Key="run.lock")["Body"].read())[
            "hostname"
        ]
        == "host-b"
    )


def test_a_refused_renewal_ends_ownership(s3_store: S3Server, bucket: str, aws):
    with LinkProxy(s3_store.endpoint) as link:
        aws.setenv("AWS_ENDPOINT_URL", link.endpoint)
        lease = Lease(f"s3://{bucket}", "run.lock", holder("a"), scope="run")
        lease.acquire()
        link.refuse(is_put_of("run.lock"), 403, "ExpiredToken")
        wait_for(lambda: lease.lost is not None, "the refused renewal")
        assert "refused the credentials" in lease.lost
        assert not lease.held
        lease.release()


HOLD = """
import sys, time
from trainflow.storage.holders import this_holder
from trainflow.storage.leases import Lease
lease = Lease(sys.argv[1], "run.lock", this_holder())
lease.acquire()
print("held", flush=True)
time.sleep(600)
"""


def start_holder(url: str, environment: dict) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, url], env=environment, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_dead_holder_on_this_host_is_taken_over_at_once_and_a_live_one_never(
    s3_store: S3Server, bucket: str, aws, caplog
):
    import os

    from tests.conftest import REPO_ROOT
    from trainflow.storage.holders import this_holder

    url = f"s3://{bucket}"
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    alive = start_holder(url, environment)
    try:
        with pytest.raises(LeaseHeld, match=f"process {alive.pid} on "):
            Lease(url, "run.lock", this_holder()).acquire()
    finally:
        alive.kill()
        alive.wait()
    # Killed without releasing: its lease is fresh, but its process is certainly gone.
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "trainflow.storage"):
        lease = Lease(url, "run.lock", this_holder())
        lease.acquire()
    assert time.monotonic() - started < leases.EXPIRY_SECONDS / 2
    assert f"process {alive.pid}" in caplog.text and "whose process is gone" in caplog.text
    assert lease.generation == 2
    lease.release()


def test_refusals_are_sorted_by_their_code(s3_store: S3Server, bucket: str, aws):
    with LinkProxy(s3_store.endpoint) as link:
        aws.setenv("AWS_ENDPOINT_URL", link.endpoint)
        store = ObjectStore(f"s3://{bucket}")
        link.refuse(is_put_of("quota"), 403, "QuotaExceeded")
        with pytest.raises(StoreError, match=r"refused to write quota: QuotaExceeded \(HTTP 403\)"):
            store.put_file(Path(__file__), "quota")
        assert len(link.writes_under(f"/{bucket}/quota")) == 1  # not retried
        link.refuse(is_put_of("busy"), 503, "SomethingNew")
        with pytest.raises(StoreUnavailableError):
            store.call(
                lambda: store.fs.put_file(__file__, store.path("busy")), "write busy", (0.01, 0.01)
            )
        assert len(link.writes_under(f"/{bucket}/busy")) >= 3  # retried: 5xx is passing
        link.refuse(is_put_of("slow"), 400, "SlowDown")
        with pytest.raises(StoreUnavailableError):
            store.call(
                lambda: store.fs.put_file(__file__, store.path("slow")), "write slow", (0.01,)
            )
