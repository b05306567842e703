"""Artifacts in an object store: the rows of issue 13, against a local S3-compatible server (moto's
`moto_server`, a process of its own on 127.0.0.1, so that serving requests does not share this
process with the training it measures).

- checkpoint overhead into the store, every epoch and every 100 steps (bench/training.py);
- recovery from the store: a run SIGKILLed mid-epoch restarted on a "machine" with nothing local,
  timed to its first resumed step (bench/recovery.py);
- a whole `trainflow run` with its artifacts in the store against the same run on local disk.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.stack.prefect_server import LOOPBACK, free_port
from bench.harness import MNIST_COMMAND_SOURCE, MNIST_SOURCE, TRAINFLOW, Row, alternate, spread

BUCKET = "trainflow-bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def local_s3_server() -> Iterator[str]:
    """`moto_server` on a free loopback port, with the bucket made, and this process's environment
    (inherited by the `trainflow run` processes) pointed at it; yields the artifacts URL."""
    port = free_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    server = subprocess.Popen(
        [str(Path(TRAINFLOW).with_name("moto_server")), "-H", LOOPBACK, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = dict(os.environ)
    try:
        wait_until_listening(endpoint)
        os.environ.update(AWS_ENDPOINT_URL=endpoint, **CREDENTIALS)
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}/bench"
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.terminate()
        server.wait()


def wait_until_listening(endpoint: str) -> None:
    """Return once the server at `endpoint` answers HTTP (any status)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start at {endpoint}") from None
            time.sleep(0.2)


def whole_run_in_the_store(
    api_url: str, store: str, directory: Path, repeats: int, epochs: int
) -> Row:
    """`trainflow run` with `--artifacts` in the store against the same run on local disk."""
    environment = {**os.environ, "PREFECT_API_URL": api_url}
    runs = iter(range(1_000_000))

    def run(artifacts: str) -> float:
        arguments = [TRAINFLOW, "run", "--dataset", MNIST_SOURCE, "--epochs", str(epochs)]
        arguments += ["--checkpoint-every", "100", "--artifacts", artifacts]
        arguments += ["--run-name", f"whole-{next(runs)}"]
        began = time.monotonic()
        subprocess.run(arguments, env=environment, check=True, capture_output=True)
        return time.monotonic() - began

    times = alternate(
        {"store": lambda: run(store), "local": lambda: run(str(directory / "local"))}, repeats
    )
    ratios = [ours / theirs for ours, theirs in zip(times["store"], times["local"])]
    return Row(
        f"a whole run, {epochs} epochs of mlp on the MNIST test split: artifacts in the local S3 "
        "server vs on local disk",
        f"ratio {spread(ratios, unit='x')}; store {spread(times['store'])}, "
        f"local {spread(times['local'])}",
        "(reported)",
        None,
        f"trainflow run --dataset {MNIST_COMMAND_SOURCE} --epochs {epochs} --checkpoint-every 100 "
        "--artifacts s3://BUCKET/PREFIX vs --artifacts DIR",
        {"ratio": statistics.median(ratios)},
    )


def store_rows(api_url: str, directory: Path, repeats: int, epochs: int) -> list[Row]:
    """Every row of this module, against one local S3 server."""
    from bench.recovery import recovery_cost
    from bench.training import checkpoint_rows

    with local_s3_server() as store:
        rows = checkpoint_rows(
            MNIST_SOURCE, "MNIST test split", repeats, epochs, directory / "data", store
        )
        rows += recovery_cost(
            api_url, directory, repeats, epochs=3, every=50, kill_step=330, store=store
        )
        rows.append(whole_run_in_the_store(api_url, store, directory, repeats, epochs))
    return rows


def store_only(repeats: int, epochs: int, command: str, began: float) -> str:
    """`./dev bench --only-store`: this module's rows and, in the same run, the local rows they
    are compared with (recovery, checkpoint overhead); returns the report."""
    import tempfile

    from app.stack.prefect_server import LocalServer
    from bench.recovery import recovery_cost
    from bench.report import render
    from bench.training import checkpoint_rows

    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        with LocalServer(home=directory / "prefect-home") as server:
            rows = recovery_cost(
                server.api_url, directory, repeats, epochs=3, every=50, kill_step=330
            )
            rows += store_rows(server.api_url, directory / "store", repeats, epochs)
        rows += checkpoint_rows(
            MNIST_SOURCE, "MNIST test split", repeats, epochs, directory / "mnist"
        )
    return render(rows, command, time.monotonic() - began)
