"""One owner at a time, end to end with the real lease timings: machine A trains a run in a real
S3-compatible store through a link that stalls past the lease's expiry; machine B, reaching the
store directly, takes the run over and finishes it. When A's link comes back, A stops with one line
and writes nothing more: every write A sent after B's takeover is counted at the link (zero), and
B's final weights are those of a run never interrupted."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.conftest import TRAINFLOW
from tests.link_proxy import LinkProxy
from tests.s3_server import S3Server
from tests.store_machines import RUN_TIMEOUT, committed_checkpoints, machine, run_options, trainflow
from trainflow.checkpoints.compare import differing_arrays
from trainflow.storage.digests import sha256_of_files

# Long enough that A is still training when its link stalls: after the first commit the test
# sees, 20 more commits and the model's export remain, each a round trip to the store.
LONG_RUN = ("--epochs", "10", "--patience", "10")


def lease_generation(store: S3Server, bucket: str, key: str) -> int:
    body = store.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return json.loads(body).get("generation", 0)


def wait_until(condition, what: str, *processes: subprocess.Popen) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while not condition():
        for process in processes:
            assert process.poll() is None, f"a run ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_machine_cut_off_past_the_expiry_stops_and_the_one_that_took_over_finishes(
    s3_store: S3Server, bucket: str, idx_dir: Path, tmp_path: Path
):
    artifacts = f"s3://{bucket}/team"
    lock_key = "team/locks/split.lock"
    arguments = run_options(idx_dir, artifacts, "split", *LONG_RUN)
    with LinkProxy(s3_store.endpoint) as link:
        cwd_a, machine_a = machine(tmp_path, "machine-a", s3_store)
        log_a = tmp_path / "machine-a.log"
        with log_a.open("w") as stream:
            run_a = subprocess.Popen(
                [TRAINFLOW, *arguments],
                cwd=cwd_a,
                env={**machine_a, "AWS_ENDPOINT_URL": link.endpoint},
                stdout=subprocess.PIPE,
                stderr=stream,
                text=True,
            )
        try:
            wait_until(
                lambda: committed_checkpoints(s3_store, bucket, "team/runs/split"),
                "A's first checkpoint",
                run_a,
            )
            link.stall()

            cwd_b, machine_b = machine(tmp_path, "machine-b", s3_store)
            run_b = subprocess.Popen(
                [TRAINFLOW, *arguments],
                cwd=cwd_b,
                env=machine_b,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_until(lambda: lease_generation(s3_store, bucket, lock_key) == 2, "B's takeover")
            took_over = time.monotonic()
            out_b, err_b = run_b.communicate(timeout=RUN_TIMEOUT)
            link.resume()  # A's link comes back
            run_a.communicate(timeout=RUN_TIMEOUT)
        finally:
            if run_a.poll() is None:
                run_a.kill()
        # (Its lease's own renewals, conditional on its old ETag, are refused by the store.)
        late_writes = link.writes_under(f"/{bucket}/team/runs/", since=took_over)

    assert run_b.returncode == 0, err_b[-3000:]
    assert "Took over the lock" in err_b
    summary = json.loads(out_b)
    assert summary["resumed_from_step"] is not None

    err_a = log_a.read_text()
    assert run_a.returncode == 1, err_a[-3000:]
    last_line = err_a.strip().splitlines()[-1]
    assert last_line.startswith(f"trainflow: error: lost the lock {artifacts}/locks/split.lock: ")
    assert "Traceback" not in err_a
    assert [(r.method, r.path) for r in late_writes] == []  # A sent no write after the takeover

    record = json.loads(
        s3_store.client().get_object(Bucket=bucket, Key="team/runs/split/run.json")["Body"].read()
    )
    assert record["status"] == "completed" and record["pid"] == run_b.pid
    assert record["lock_generation"] == 2  # written by the second owner of the run
    manifests = committed_checkpoints(s3_store, bucket, "team/runs/split")
    assert manifests and {manifest.lock_generation for manifest in manifests} == {2}

    cwd_c, machine_c = machine(tmp_path, "machine-c", s3_store)
    reference = trainflow(cwd_c, machine_c, *run_options(idx_dir, artifacts, "whole", *LONG_RUN))
    assert reference.returncode == 0, reference.stderr[-3000:]
    split = s3_store.download(bucket, "team/runs/split/model", tmp_path / "split")
    whole = s3_store.download(bucket, "team/runs/whole/model", tmp_path / "whole")
    weights = Path("model.weights.h5")
    assert differing_arrays(split / weights, whole / weights) == []
    assert sha256_of_files([split / weights]) == sha256_of_files([whole / weights])
