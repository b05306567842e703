"""An MLflow tracking server process (`mlflow server`) on a port of 127.0.0.1 (by default), with
its runs in a database (SQLite under its home, or the stack's PostgreSQL) and its artifacts in a
directory it serves to clients (`--artifacts-destination`: clients upload and download through the
server, so they need no access to the directory)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.stack.prefect_server import (
    EVERY_ADDRESS,
    LOOPBACK,
    browser_host,
    free_port,
    is_healthy,
    stop_with_parent,
    url_host,
)

MLFLOW_COMMAND = str(Path(sys.executable).with_name("mlflow"))
SERVER_START_TIMEOUT = 180


class MlflowServer:
    """`mlflow server` with its database and artifacts under `home`; `start`, `wait_until_healthy`,
    `stop`, or the object as a context manager. `database_url` replaces the SQLite file (an
    SQLAlchemy URL, such as the stack's PostgreSQL). Like `LocalServer`, it stops when this
    process dies unless `detached`."""

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        host: str = LOOPBACK,
        database_url: str | None = None,
        detached: bool = False,
        log: Path | None = None,
    ) -> None:
        self.home = home
        self.port = port or free_port()
        self.host = host
        client_host = LOOPBACK if host in EVERY_ADDRESS else host
        self.url = f"http://{url_host(client_host)}:{self.port}"
        self.ui_url = f"http://{url_host(browser_host(host))}:{self.port}"
        self.database_url = database_url or f"sqlite:///{home / 'mlflow.db'}"
        self.detached = detached
        self.process: subprocess.Popen | None = None
        self.log = log.open("w+") if log is not None else tempfile.TemporaryFile(mode="w+")

    def start(self) -> MlflowServer:
        """Start the server process without waiting for it."""
        self.home.mkdir(parents=True, exist_ok=True)
        arguments = [
            MLFLOW_COMMAND,
            "server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--backend-store-uri",
            self.database_url,
            "--artifacts-destination",
            str(self.home / "artifacts"),
            "--workers",
            "1",  # a stack's tracking on two cores: one process is plenty
        ]
        if self.host not in (LOOPBACK, "localhost"):
            # MLflow answers only requests addressed to localhost unless told which hosts to serve.
            arguments += ["--allowed-hosts", "*"]
        self.process = subprocess.Popen(
            arguments,
            env={**_environment(), "MLFLOW_DISABLE_TELEMETRY": "true"},
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=self.detached,
            preexec_fn=None if self.detached else stop_with_parent,
        )
        return self

    def wait_until_healthy(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        """Block until the server answers; raise with its log if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while not is_healthy(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise RuntimeError(
                    f"the MLflow server on port {self.port} did not start: {self.log.read()[-2000:]}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 30 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> MlflowServer:
        self.start().wait_until_healthy()
        return self

    def __exit__(self, *exception: object) -> None:
        self.stop()
        self.log.close()


def _environment() -> dict[str, str]:
    # The server's own client settings must not point it at another tracking server.
    return {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
