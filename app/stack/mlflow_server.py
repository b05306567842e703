"""An MLflow tracking server process (`mlflow server`) on a port of 127.0.0.1 (by default), with
its runs in an SQLite database under its home (or the database it is given) and its artifacts in a
directory it serves to clients (`--artifacts-destination`: clients upload and download through the
server, so they need no access to the directory)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from app.stack.prefect_server import (
    EVERY_ADDRESS,
    LOOPBACK,
    ServerProcess,
    free_port,
    url_host,
)

MLFLOW_COMMAND = str(Path(sys.executable).with_name("mlflow"))


class MlflowServer(ServerProcess):
    """`mlflow server` with its database and artifacts under `home`; `start`, `wait_until_healthy`,
    `stop`, or the object as a context manager. Like `LocalServer`, it stops when this process
    dies unless `detached`. `database_url` (SQLAlchemy's form) puts its runs in another database;
    it may hold a password, so it is given to the server in its environment, not its arguments
    (which every user of the machine can read)."""

    name = "MLflow server"

    def __init__(
        self,
        home: Path,
        port: int | None = None,
        host: str = LOOPBACK,
        detached: bool = False,
        log: Path | None = None,
        database_url: str | None = None,
    ) -> None:
        self.home = home
        self.port = port or free_port()
        self.host = host
        client_host = LOOPBACK if host in EVERY_ADDRESS else host
        self.url = f"http://{url_host(client_host)}:{self.port}"
        self.health_url = self.url
        self.database_url = database_url or f"sqlite:///{home / 'mlflow.db'}"
        self.detached = detached
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
            "--artifacts-destination",
            str(self.home / "artifacts"),
            "--workers",
            "1",  # a stack's tracking on two cores: one process is plenty
        ]
        if self.host not in (LOOPBACK, "localhost"):
            # MLflow answers only requests addressed to localhost unless told which hosts to serve.
            arguments += ["--allowed-hosts", "*"]
        environment = {
            **_environment(),
            "MLFLOW_BACKEND_STORE_URI": self.database_url,  # `--backend-store-uri`, unseen
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        self._launch(arguments, environment)
        return self


def _environment() -> dict[str, str]:
    # The server's own client settings must not point it at another tracking server.
    return {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
