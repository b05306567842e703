"""Locks across machines on a real S3-compatible store: a run name is held by one machine at a
time, a dead holder's lease expires, and promotions from two machines leave the registry whole."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import TRAINFLOW
from tests.s3_server import S3Server
from tests.store_machines import RUN_TIMEOUT, machine, run_options, trainflow

# Long enough to be running still when the second machine has been refused; the run that takes
# over asks for fewer epochs than were checkpointed before the kill, so it resumes and is done.
LONG_RUN = ("--epochs", "60", "--patience", "60")
TAKE_OVER_RUN = ("--epochs", "1", "--patience", "60")


def wait_for_key(
    store: S3Server, bucket: str, prefix: str, process: subprocess.Popen, suffix: str = ""
) -> None:
    """Wait until a key starting with `prefix` (and ending with `suffix`) is in the store, while
    `process` runs."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while not [key for key in store.keys(bucket, prefix) if key.endswith(suffix)]:
        assert process.poll() is None, f"the run ended before {prefix} appeared"
        assert time.monotonic() < deadline, f"{prefix} never appeared"
        time.sleep(0.2)


def test_a_second_machine_is_refused_while_the_first_runs_and_takes_over_once_it_died(
    s3_store: S3Server, bucket: str, idx_dir: Path, tmp_path: Path
):
    artifacts = f"s3://{bucket}/team"
    cwd_a, machine_a = machine(tmp_path, "machine-a", s3_store)
    first = subprocess.Popen(
        [TRAINFLOW, *run_options(idx_dir, artifacts, "race", *LONG_RUN)],
        cwd=cwd_a,
        env=machine_a,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_key(s3_store, bucket, "team/locks/race.lock", first)
        # A committed checkpoint to take over (the first epoch's manifest), before the race.
        wait_for_key(s3_store, bucket, "team/runs/race/checkpoints/resume/step-", first, ".json")
        cwd_b, machine_b = machine(tmp_path, "machine-b", s3_store)
        refused = trainflow(cwd_b, machine_b, *run_options(idx_dir, artifacts, "race", *LONG_RUN))
        assert first.poll() is None, "the first machine's run ended before the race was decided"
        assert refused.returncode == 2, refused.stderr[-3000:]
        message = refused.stderr.strip().splitlines()[-1]
        assert message.startswith("trainflow: error: run race is in use by process ")
        assert f"process {first.pid} on " in message
        assert "Traceback" not in refused.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    # The holder died without releasing its lease; on this host its death is certain, and the
    # next attempt takes over without waiting for the lease to expire.
    resumed = trainflow(cwd_b, machine_b, *run_options(idx_dir, artifacts, "race", *TAKE_OVER_RUN))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Took over the lock {artifacts}/locks/race.lock from process {first.pid}" in (
        resumed.stderr
    )
    assert "whose process is gone" in resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from_step"] is not None


PROMOTE = """
import os, sys, time
from trainflow.paths import ArtifactPaths
from trainflow.runs.registry import ModelVersion, Registry, now

artifacts, machine, ready, other = sys.argv[1:]
registry = Registry(ArtifactPaths.at(artifacts))
open(ready, "w").close()
while not os.path.exists(other):  # both machines promote at the same time
    time.sleep(0.05)
for index in range(4):
    version = ModelVersion(
        run_name=f"{machine}-{index}", decision="promoted", reason="test", test_accuracy=0.9,
        test_loss=0.1, data_fingerprint="f", model_path="m", weights_path="w",
        saved_model_path="s", parameters={}, code_version="c", registered_at=now(),
    )
    asked = time.monotonic()
    with registry.locked():  # what promote_challenger does
        print(f"waited {time.monotonic() - asked:.3f}", flush=True)
        registry.register(version)
        time.sleep(1)  # a promotion that takes a while: the other machine must wait for it
"""


def ready_files(tmp_path: Path, name: str, other: str) -> tuple[str, str]:
    """The file this machine creates when it is ready to promote, and the other machine's."""
    return str(tmp_path / f"{name}.ready"), str(tmp_path / f"{other}.ready")


def test_eight_promotions_from_two_machines_keep_the_registry_consistent(
    s3_store: S3Server, bucket: str, tmp_path: Path
):
    artifacts = f"s3://{bucket}/team"
    processes = []
    for name, other in (("machine-a", "machine-b"), ("machine-b", "machine-a")):
        cwd, environment = machine(tmp_path, name, s3_store)
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    PROMOTE,
                    artifacts,
                    name,
                    *ready_files(tmp_path, name, other),
                ],
                cwd=cwd,
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    waits = []
    for process in processes:
        out, err = process.communicate(timeout=RUN_TIMEOUT)
        assert process.returncode == 0, err[-3000:]
        waits += [float(line.split()[1]) for line in out.splitlines()]
    assert len(waits) == 8
    # The promotions overlapped: some machine asked while the other held the lock, and waited.
    assert max(waits) >= 0.5

    client = s3_store.client()
    versions = json.loads(
        client.get_object(Bucket=bucket, Key="team/registry/versions.json")["Body"].read()
    )
    champion = json.loads(
        client.get_object(Bucket=bucket, Key="team/registry/champion.json")["Body"].read()
    )
    names = [version["run_name"] for version in versions]
    assert sorted(names) == sorted(f"{m}-{i}" for m in ("machine-a", "machine-b") for i in range(4))
    for name in ("machine-a", "machine-b"):  # each machine's promotions in its own order
        own = [run for run in names if run.startswith(name)]
        assert own == [f"{name}-{index}" for index in range(4)]
    # Every promotion saw the one before it: the champion chain is the registration order.
    assert champion["run_name"] == names[-1]
    assert champion["previous"] == names[:-1]
    lock = json.loads(
        client.get_object(Bucket=bucket, Key="team/registry/registry.lock")["Body"].read()
    )
    assert lock["released"] is True  # released by the last promotion
    assert lock["generation"] == 8  # one holder after another, each knowing the one before
