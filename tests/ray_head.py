"""A real Ray cluster for the tests: `ray start --head` on this machine, stopped afterwards.

Ray 2.60 does not confine itself to 127.0.0.1: `--node-ip-address 127.0.0.1` is replaced by the
machine's address and its GCS listens on every interface (ray-project/ray#59852 was reverted).
The tests connect through 127.0.0.1; the head lives only as long as the test module."""

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.stack.prefect_server import free_port

RAY = str(Path(sys.executable).with_name("ray"))
# `ray start` returns once the head runs; on a loaded machine that can take a while.
START_TIMEOUT_SECONDS = 300


@contextmanager
def ray_head(cpus: int = 2) -> Iterator[str]:
    """A Ray head with `cpus` CPUs; yields its address (`127.0.0.1:PORT`)."""
    port = free_port()
    # Short: Ray's Unix sockets live under it, and their paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp") as temp_dir:
        subprocess.run(
            [
                RAY, "start", "--head", "--port", str(port), "--num-cpus", str(cpus),
                "--node-ip-address", "127.0.0.1", "--include-dashboard", "false",
                "--disable-usage-stats", "--temp-dir", temp_dir,
            ],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_SECONDS,
        )  # fmt: skip
        try:
            yield f"127.0.0.1:{port}"
        finally:
            subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
