"""`trainflow stack up --postgres` and `--database-url`: the server on PostgreSQL, with the password
kept in a file of mode 0600 and out of every output, and `stack down` stopping the cluster up
started (and only that)."""

import asyncio
import json
import os
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from app.stack.database import check_database_url
from app.stack.lifecycle import read_stack, stack_down
from app.stack.postgres import find_binaries, start_cluster, stop_cluster
from app.stack.prefect_server import free_port, is_healthy
from app.stack.processes import is_alive
from tests.conftest import REPO_ROOT, TRAINFLOW, needs_postgres
from trainflow.errors import UserInputError

TIMEOUT = 300
EXIT_USER_ERROR = 2


def trainflow_stack(home: Path, *arguments: str, status: int = 0) -> subprocess.CompletedProcess:
    """`trainflow stack ... --home HOME` from the repository root, as a user runs it."""
    environment = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    completed = subprocess.run(
        [TRAINFLOW, "stack", *arguments, "--home", str(home)],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert completed.returncode == status, completed.stdout + completed.stderr[-3000:]
    return completed


def processes_of(postmaster: int) -> list[int]:
    """The postmaster `postmaster` and its children that have not exited."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        pid = int(stat.parent.name)
        if state != "Z" and postmaster in (pid, int(parent)):
            found.append(pid)
    return found


async def query(port: int, password: str, sql: str, user: str = "prefect") -> object:
    connection = await asyncpg.connect(
        host="127.0.0.1", port=port, user=user, password=password, database="prefect"
    )
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


@needs_postgres
def test_stack_on_postgres_keeps_the_password_and_down_stops_the_cluster(tmp_path):
    home = tmp_path / "stack-home"
    up = trainflow_stack(home, "up", "--postgres", "--port", str(free_port()))
    try:
        record = read_stack(home)
        recorded = (home / "stack.json").read_text()
        cluster = record.postgres
        password_file = home / "postgres-password"
        assert password_file.stat().st_mode & 0o777 == 0o600
        password = password_file.read_text()
        assert record.database_url == (
            f"postgresql+asyncpg://prefect:***@127.0.0.1:{cluster.port}/prefect"
        )
        # pytest's temporary directories are private (0700): the postgres user cannot reach the
        # home, so as root the cluster lives in a directory of its own, which `down` removes.
        if os.geteuid() == 0:
            assert cluster.temporary and cluster.run_as == "postgres"
            assert up.stdout.splitlines()[0] == (
                f"Database {record.database_url} (PostgreSQL in {cluster.directory}, which "
                "`stack down` removes)"
            )
        assert processes_of(cluster.pid)

        port = cluster.port
        assert asyncio.run(query(port, password, "SHOW listen_addresses")) == "127.0.0.1"
        assert asyncio.run(query(port, password, "SHOW password_encryption")) == "scram-sha-256"
        trgm = "SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'"
        assert asyncio.run(query(port, password, trgm)) == 1
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(query(port, password[::-1], "SELECT 1"))
        with urllib.request.urlopen(f"{record.api_url}/deployments/name/trainflow/train") as page:
            assert json.load(page)["work_pool_name"] == "trainflow-local"

        again = trainflow_stack(home, "up", "--postgres", "--port", str(free_port()))
        assert read_stack(home) == record  # all alive: up changes nothing
        postgres_log = (Path(cluster.directory) / "postgres.log").read_text()

        down = trainflow_stack(home, "down")
        assert down.stdout == (
            f"Stopped the worker (pid {record.worker_pid}), the server (pid {record.server_pid}) "
            f"and PostgreSQL (pid {cluster.pid})\n"
        )
        assert not processes_of(cluster.pid)
        assert not is_healthy(record.api_url)
        assert not cluster.temporary or not Path(cluster.directory).exists()
        written = {
            "up": up.stdout + up.stderr,
            "up again": again.stdout + again.stderr,
            "down": down.stdout,
            "stack.json": recorded,
            "postgres.log": postgres_log,
            "server.log": (home / "server.log").read_text(),
            "worker.log": (home / "workers" / "1" / "worker.log").read_text(),
        }
        for name, text in written.items():
            assert password not in text, f"the password is in {name}"
    finally:
        if (home / "stack.json").exists():  # a failed check must not leave the stack running
            stack_down(home)


@needs_postgres
def test_stack_on_an_existing_server_leaves_that_server_running(tmp_path):
    (tmp_path / "database-home").mkdir()
    cluster, url = start_cluster(tmp_path / "database-home", find_binaries())
    home = tmp_path / "stack-home"
    try:
        up = trainflow_stack(home, "up", "--database-url", url, "--port", str(free_port()))
        record = read_stack(home)
        password = urlsplit(url).password
        assert record.postgres is None
        assert record.database_url == url.replace(password, "***")
        assert up.stdout.splitlines()[0] == f"Database {record.database_url}"
        assert password not in up.stdout + (home / "stack.json").read_text()
        assert is_healthy(record.api_url)

        down = trainflow_stack(home, "down")
        assert "PostgreSQL" not in down.stdout
        assert is_alive(cluster.pid) and not is_healthy(record.api_url)
    finally:
        if (home / "stack.json").exists():
            stack_down(home)
        stop_cluster(cluster)
    assert not processes_of(cluster.pid)


def test_an_unreachable_database_url_is_one_line_without_its_password(tmp_path):
    url = f"postgresql+asyncpg://prefect:hunter2hunter2@127.0.0.1:{free_port()}/prefect"
    failed = trainflow_stack(tmp_path, "up", "--database-url", url, status=EXIT_USER_ERROR)
    (line,) = failed.stderr.splitlines()
    assert line.startswith(
        f"trainflow: error: --database-url {url.replace('hunter2hunter2', '***')}: cannot connect"
    )
    assert "hunter2hunter2" not in failed.stdout + failed.stderr
    assert not (tmp_path / "stack.json").exists()


@pytest.mark.parametrize(
    "url", ["mysql://u:pw@db/prefect", "postgresql+asyncpg://u:pw@db", "not a url"]
)
def test_a_database_url_of_another_kind_names_the_form_expected(url):
    with pytest.raises(
        UserInputError, match="expected postgresql\\+asyncpg://USER:PASSWORD@"
    ) as error:
        check_database_url(url)
    assert ":pw@" not in str(error.value)


def test_without_postgresql_binaries_the_error_says_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "15" / "bin").mkdir(parents=True)  # a version directory without the binaries
    with pytest.raises(UserInputError) as error:
        find_binaries(roots=(tmp_path,))
    assert "\n" not in str(error.value)
    assert "`apt-get install postgresql`" in str(error.value)
    assert str(error.value).startswith("--postgres: no PostgreSQL server binaries")


def test_too_old_postgresql_binaries_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    directory = tmp_path / "12" / "bin"
    directory.mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres"):
        (directory / name).write_text("#!/bin/sh\n")
        (directory / name).chmod(0o755)
    with pytest.raises(UserInputError, match="PostgreSQL 12 .* too old for Prefect"):
        find_binaries(roots=(tmp_path,))
