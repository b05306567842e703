"""A local Prefect server process (`prefect server start`) bound to 127.0.0.1.

`trainflow run` starts one for itself when no `PREFECT_API_URL` is set, instead of Prefect's
ephemeral server: that one is an ordinary child process, so when a run is SIGKILLed it lives on,
holding the run's output pipes open. Ours is stopped by the kernel when its owner dies (Linux).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Self

from trainflow.network import free_ports

SERVER_START_TIMEOUT = 120
LOOPBACK = "127.0.0.1"  # the default: reachable from this machine only
EVERY_ADDRESS = ("0.0.0.0", "::")
# The `prefect` command of this environment (the worker and the server must run in it).
PREFECT_COMMAND = str(Path(sys.executable).with_name("prefect"))
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def browser_host(host: str) -> str:
    """The address a browser uses to reach a server listening on `host`: `host` itself, or for
    every address (0.0.0.0, ::) this machine's address on its default route (its name when it
    has no route), which other machines can reach too."""
    if host not in EVERY_ADDRESS:
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # a documentation address: no packet is sent
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostname()


def url_host(host: str) -> str:
    """`host` as a URL writes it (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def is_healthy(api_url: str) -> bool:
    """True when the server at `api_url` answers its health check."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop_with_parent() -> None:
    """In the child, before exec: ask the kernel to SIGTERM it when its parent dies."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """A server run as a child process, its output in `log`: started by a subclass's `start`
    (through `_launch`), waited for until `health_url` answers, stopped; or used as a context
    manager. It stops when this process dies (Linux), unless `detached` puts it in a session of
    its own that outlives this process."""

    name = "server"
    health_url: str
    port: int
    detached: bool
    log: Any
    process: subprocess.Popen | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def _launch(self, arguments: list[str], environment: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            arguments,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=self.detached,
            preexec_fn=None if self.detached else stop_with_parent,
        )

    def wait_until_healthy(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        """Block until the server answers; raise with its log if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while not is_healthy(self.health_url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                raise RuntimeError(
                    f"the {self.name} on port {self.port} did not start: {self.log.read()[-2000:]}"
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
        self.log.close()

    def __enter__(self) -> Self:
        self.start().wait_until_healthy()
        return self

    def __exit__(self, *exception: object) -> None:
        self.stop()


class LocalServer(ServerProcess):
    """`prefect server start` on a port of `host` (default: loopback only); use `start`,
    `wait_until_healthy`, `stop`, or the object as a context manager.

    By default the server is tied to this process (it stops when this process dies); `detached`
    puts it in a session of its own that outlives this process, for a long-lived local stack.
    `settings` are environment variables for the server only (its database URL, its basic-auth
    string): they may hold secrets, so they are passed to the server and kept nowhere else.
    `ui_host` is the address browsers reach it at (default: `browser_host(host)`); its UI,
    `ui_url`, talks to the API at that address and this port.
    """

    name = "Prefect server"

    def __init__(
        self,
        home: Path | None = None,
        services: bool = False,
        port: int | None = None,
        detached: bool = False,
        log: Path | None = None,
        host: str = LOOPBACK,
        settings: dict[str, str] | None = None,
        ui_host: str | None = None,
    ) -> None:
        self.home = home
        self.services = services
        self.port = port or free_port()
        self.host = host
        # Clients on this machine reach a server listening on every address through loopback.
        client_host = LOOPBACK if host in EVERY_ADDRESS else host
        self.api_url = f"http://{url_host(client_host)}:{self.port}/api"
        self.health_url = self.api_url
        # What a browser opens, on this machine or (off loopback) another one.
        self.ui_url = f"http://{url_host(ui_host or browser_host(host))}:{self.port}"
        self.detached = detached
        self.settings = settings or {}
        self.process: subprocess.Popen | None = None
        self.log = log.open("w+") if log is not None else tempfile.TemporaryFile(mode="w+")

    def start(self) -> LocalServer:
        """Start the server process without waiting for it."""
        environment = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
        environment["PREFECT_UI_ENABLED"] = "true"  # a run's own too, to look at while it lasts
        # The UI asks the server which API to talk to, and Prefect answers from these settings,
        # not from `--port`: without them a UI on any port but 4200 talks to port 4200.
        environment["PREFECT_UI_API_URL"] = f"{self.ui_url}/api"
        environment["PREFECT_UI_URL"] = self.ui_url
        environment["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        if self.home is not None:
            environment["PREFECT_HOME"] = str(self.home)
        environment.update(self.settings)
        arguments = [
            PREFECT_COMMAND,
            "server",
            "start",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        if not self.services:
            arguments.append("--no-services")
        self._launch(arguments, environment)
        return self

    def warm_up(self) -> None:
        """Wait for the server, then send it the first requests a flow run makes (its version, a
        query of its database): a new server answers its first ones slowly (0.6 s measured), and
        this way that time passes while the caller does other work (importing TensorFlow). Any
        error is left for `wait_until_healthy` to report."""
        try:
            self.wait_until_healthy()
            urllib.request.urlopen(f"{self.api_url}/admin/version", timeout=30).close()
            query = urllib.request.Request(
                f"{self.api_url}/flows/filter",
                data=b'{"limit": 1}',
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(query, timeout=30).close()
        except (OSError, RuntimeError):
            return
