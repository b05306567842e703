"""`trainflow stack up|down`: a local Prefect server, its database, the work pool, the
deployments and the workers.

Everything lives under one home (by default `<project>/.prefect-home`): the SQLite database (the
default) or, with `--postgres`, a local PostgreSQL cluster (see `postgres.py` for where it lives
when run as root); the workers' directories (`workers.py`); the secrets, each in a file of mode
0600 (`credentials.py`); the logs; and `stack.json`, which records the process ids and the
database URL without its password. The server listens on 127.0.0.1 unless `--host` says
otherwise, and then asks every client for the basic-auth string in `<home>/auth`. `down` stops
exactly what `up` started.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, computed_field, model_validator

from app.stack.credentials import (
    ensure_auth_string,
    redact_url,
    requires_auth,
    scrub,
)
from app.stack.database import check_database_url, sqlite_url
from app.stack.deployments import deploy_to
from app.stack.mlflow_server import MlflowServer
from app.stack.options import StackOptions
from app.stack.postgres import (
    Cluster,
    cluster_is_running,
    find_binaries,
    start_cluster,
    stop_cluster,
)
from app.stack.prefect_server import (
    LocalServer,
    is_healthy,
)
from app.stack.processes import STOP_TIMEOUT, is_alive, stop_group
from app.stack.workers import start_worker, worker_places
from trainflow.errors import UserInputError

# A user's own database settings: the stack's server is given the one stack.json records (under
# the first name, which Prefect prefers), and its clients need none.
DATABASE_VARIABLES = (
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
)


class Stack(BaseModel):
    """What `stack.json` records about a running stack (no secret in it)."""

    api_url: str
    server_pid: int
    ui_url: str  # what a browser opens
    worker_pids: list[int]
    worker_names: list[str] = []
    database_url: str | None = None  # redacted: the password is `***`
    postgres: Cluster | None = None  # the cluster `up` started, which `down` stops
    auth_file: str | None = None  # where the basic-auth string is, when the server asks for one
    mlflow_url: str | None = None  # the MLflow tracking server's, with --mlflow
    mlflow_pid: int | None = None
    mlflow_database_url: str | None = None  # redacted, as database_url

    @model_validator(mode="before")
    @classmethod
    def _read_single_worker(cls, data: object) -> object:
        """A stack.json written before several workers records one `worker_pid`, and one
        written before the UI's address was recorded, none."""
        if isinstance(data, dict) and "worker_pids" not in data and "worker_pid" in data:
            data = {**data, "worker_pids": [data["worker_pid"]]}
        if isinstance(data, dict) and "ui_url" not in data and "api_url" in data:
            data = {**data, "ui_url": data["api_url"].removesuffix("/api")}  # as it was then
        return data

    @computed_field
    @property
    def worker_pid(self) -> int:
        """The first worker's pid (what stack.json recorded before several workers)."""
        return self.worker_pids[0]


def stack_environment(
    project_dir: Path, home: Path, api_url: str, auth_string: str | None = None
) -> dict[str, str]:
    """The environment of the workers and of every `prefect` command aimed at the stack."""
    environment = {
        key: value
        for key, value in os.environ.items()
        # An API key would take precedence over the auth string and be refused (401).
        if key not in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", *DATABASE_VARIABLES)
    }
    environment |= {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "TRAINFLOW_PROJECT_DIR": str(project_dir),
    }
    if auth_string is not None:
        environment["PREFECT_API_AUTH_STRING"] = auth_string
    return environment


def stack_up(project_dir: Path, home: Path, options: StackOptions) -> Stack:
    """Start the database (with `--postgres`), the server, create the work pool, deploy
    `deployments/prefect.yaml`, install `deployments/automations.yaml`, and start the workers.

    Returns the running stack unchanged when all of it is alive; stops the remains of a stack
    that is only partly alive first; stops what it started if a step fails."""
    home.mkdir(parents=True, exist_ok=True)
    running = read_stack(home)
    if running is not None:
        if is_running(running):
            return running
        _stop(running)
        (home / "stack.json").unlink()
    bin_dir = find_binaries() if options.postgres else None
    auth_string = ensure_auth_string(home) if requires_auth(options.host, options.auth) else None
    cluster, server, tracking, worker_pids = None, None, None, []
    secrets = [auth_string, auth_string.partition(":")[2]] if auth_string else []
    try:
        if bin_dir is not None:
            cluster, database_url = start_cluster(home, bin_dir)
        elif options.database_url is not None:
            database_url = check_database_url(options.database_url)
        else:
            database_url = sqlite_url(home)
        secrets.append(_password(database_url))
        settings = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url}
        if auth_string is not None:
            settings["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
        server = LocalServer(
            home=home,
            services=True,
            port=options.port,
            detached=True,
            log=home / "server.log",
            host=options.host,
            settings=settings,
            ui_host=options.ui_host,
        )
        server.start()
        # MLflow's server starts while Prefect's does and the deployments are made: neither
        # needs the other, and each takes seconds to import and migrate its database.
        if options.mlflow:
            tracking = _start_tracking(home, options, cluster, _password(database_url))
        server.wait_until_healthy()
        environment = stack_environment(project_dir, home, server.api_url, auth_string)
        deploy_to(project_dir, environment)
        if tracking is not None:
            tracking.wait_until_healthy()
            environment["MLFLOW_TRACKING_URI"] = tracking.url  # the workers' runs log to it
        places = worker_places(home, options.workers)
        for place in places:
            worker_pids.append(start_worker(place, environment))
    except RuntimeError as error:
        _stop_started(server, tracking, worker_pids, cluster)
        raise RuntimeError(scrub(str(error), *secrets)) from None
    except BaseException:
        _stop_started(server, tracking, worker_pids, cluster)
        raise
    stack = Stack(
        api_url=server.api_url,
        ui_url=server.ui_url,
        server_pid=server.process.pid,
        worker_pids=worker_pids,
        worker_names=[place.name for place in places],
        database_url=redact_url(database_url),
        postgres=cluster,
        auth_file=str(home / "auth") if auth_string is not None else None,
        mlflow_url=None if tracking is None else tracking.url,
        mlflow_pid=None if tracking is None else tracking.process.pid,
        mlflow_database_url=None if tracking is None else redact_url(tracking.database_url),
    )
    (home / "stack.json").write_text(stack.model_dump_json(indent=2))
    return stack


def _password(url: str) -> str | None:
    """The password in a database URL, to keep out of error messages."""
    return urlsplit(url).password


def _start_tracking(
    home: Path, options: StackOptions, cluster: Cluster | None, password: str | None
) -> MlflowServer:
    """Start the MLflow tracking server of `--mlflow`, beside Prefect's, on the same address; its
    runs in the stack's PostgreSQL cluster when there is one, else in SQLite under the home."""
    tracking = MlflowServer(
        home / "mlflow",
        port=options.mlflow_port,
        host=options.host,
        detached=True,
        log=home / "mlflow.log",
        database_url=None if cluster is None else cluster.tracking_url(password or ""),
    )
    tracking.start()
    return tracking


def _stop_started(
    server: LocalServer | None,
    tracking: MlflowServer | None,
    worker_pids: list[int],
    cluster: Cluster | None,
) -> None:
    """Stop what a failed `up` had started, newest first."""
    for pid in worker_pids:
        stop_group(pid)
    for started in (tracking, server):
        if started is not None and started.process is not None:
            stop_group(started.process.pid)
    if cluster is not None:
        stop_cluster(cluster)


def stack_down(home: Path) -> Stack:
    """Stop the workers (and their flow runs), the server, then the PostgreSQL cluster, that
    `stack_up` started."""
    stack = read_stack(home)
    if stack is None:
        raise UserInputError(f"no stack is running from {home} (no {home / 'stack.json'})")
    _stop(stack)
    (home / "stack.json").unlink()
    return stack


def _stop(stack: Stack) -> None:
    """Stop the stack's processes: workers first (no new flow runs), the database last; say which
    one did not end within its time after SIGTERM (and was killed)."""
    for pid in (*stack.worker_pids, stack.mlflow_pid, stack.server_pid):
        if pid is not None and not stop_group(pid):
            print(
                f"process {pid} did not end within {STOP_TIMEOUT} s of SIGTERM: killed",
                file=sys.stderr,
            )
    if stack.postgres is not None:
        stop_cluster(stack.postgres)


def is_running(stack: Stack) -> bool:
    """True when the server answers and every worker and the database cluster are alive."""
    return (
        is_healthy(stack.api_url)
        and all(is_alive(pid) for pid in stack.worker_pids)
        and (stack.mlflow_url is None or is_healthy(stack.mlflow_url))
        and (stack.postgres is None or cluster_is_running(stack.postgres))
    )


def read_stack(home: Path) -> Stack | None:
    """The running stack recorded under `home`, if any."""
    path = home / "stack.json"
    return Stack.model_validate(json.loads(path.read_text())) if path.is_file() else None
