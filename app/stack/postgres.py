"""A local PostgreSQL cluster for the stack's Prefect server (`trainflow stack up --postgres`).

The cluster runs from the machine's own server binaries (Debian's `postgresql` package), listens
on 127.0.0.1 only (no Unix socket), and admits only the role `prefect` with a password
(scram-sha-256) generated once and kept in `<home>/postgres-password` (mode 0600).

`initdb` and `postgres` refuse to run as root, so as root the cluster runs as the `postgres` user,
and its directory must be reachable by that user. Where it lives:

- `<home>/postgres` (data kept across `stack down` and `up`, as SQLite's file is) when this user
  runs it, or when the `postgres` user can reach the home;
- otherwise (a home under a private directory such as /root or pytest's temporary directories,
  mode 0700) a directory made for this stack only, `/var/tmp/trainflow-postgres-*`, owned by
  `postgres`; `stack.json` records it and `stack down` stops the cluster and removes it. Opening
  the private parents to another user instead would weaken what they protect.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from pydantic import BaseModel

from app.stack.credentials import (
    ensure_secret,
    generate_password,
    write_secret,
)
from app.stack.prefect_server import LOOPBACK, free_port
from app.stack.processes import is_alive, wait_for_exit
from trainflow.errors import UserInputError

SEARCH_ROOTS = (Path("/usr/lib/postgresql"),)
BINARIES = ("initdb", "pg_ctl", "postgres")
MINIMUM_VERSION = 14  # Prefect's migrations need PostgreSQL 14 or newer
SYSTEM_USER = "postgres"  # who runs the cluster when we are root
ROLE = "prefect"
DATABASE = "prefect"  # Prefect's
TRACKING_DATABASE = "mlflow"  # the MLflow tracking server's, with --mlflow
PASSWORD_FILE = "postgres-password"
SHARED_PARENTS = (Path("/var/tmp"), Path("/tmp"))
START_TIMEOUT = 60
CONNECT_TIMEOUT = 10
INSTALL_HINT = "install them with `apt-get install postgresql`, or use --database-url URL"


class Cluster(BaseModel):
    """What `stack.json` records about the cluster `stack up --postgres` started."""

    bin_dir: str
    directory: str  # holds data/ and postgres.log
    port: int
    pid: int
    run_as: str | None = None  # the system user it runs as; None: the user of the stack
    temporary: bool = False  # made for this stack only: `stack down` removes it

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (initdb's -D)."""
        return Path(self.directory) / "data"

    def url(self, password: str) -> str:
        """The URL Prefect's server connects with (it holds the password: never show it)."""
        return f"postgresql+asyncpg://{ROLE}:{password}@{LOOPBACK}:{self.port}/{DATABASE}"

    def tracking_url(self, password: str) -> str:
        """The URL of the MLflow tracking server's database, through the synchronous driver
        MLflow's store uses (it holds the password: never show it)."""
        return f"postgresql+psycopg2://{ROLE}:{password}@{LOOPBACK}:{self.port}/{TRACKING_DATABASE}"


def find_binaries(roots: tuple[Path, ...] = SEARCH_ROOTS) -> Path:
    """The directory of the newest PostgreSQL server binaries: `initdb` on PATH, else the newest
    `<root>/<version>/bin` (Debian's layout); one line naming the fix when there are none."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    for root in roots:
        versions = [path for path in root.glob("*/bin") if path.parent.name.isdigit()]
        candidates += sorted(versions, key=lambda path: int(path.parent.name), reverse=True)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in BINARIES):
            version = directory.parent.name
            if version.isdigit() and int(version) < MINIMUM_VERSION:
                raise UserInputError(
                    f"--postgres: PostgreSQL {version} in {directory} is too old for Prefect "
                    f"(it needs {MINIMUM_VERSION} or newer); {INSTALL_HINT}"
                )
            return directory
    places = ", ".join(f"{root}/*/bin" for root in roots)
    raise UserInputError(
        f"--postgres: no PostgreSQL server binaries ({', '.join(BINARIES)}) on PATH or in "
        f"{places}; {INSTALL_HINT}"
    )


def start_cluster(home: Path, bin_dir: Path) -> tuple[Cluster, str]:
    """Start the stack's cluster (initialising it on first use) on a free port, with the
    databases `prefect` (and the extension `pg_trgm`) and `mlflow`; returns it and the URL of
    `prefect` with the password."""
    run_as = _system_user()
    password = ensure_secret(home / PASSWORD_FILE, generate_password)
    directory, temporary = _cluster_directory(home, run_as)
    cluster = Cluster(
        bin_dir=str(bin_dir),
        directory=str(directory),
        port=free_port(),
        pid=0,
        run_as=run_as,
        temporary=temporary,
    )
    try:
        if not (cluster.data_dir / "PG_VERSION").is_file():
            _initialise(cluster, password)
        options = f"-c listen_addresses={LOOPBACK} -c unix_socket_directories='' -p {cluster.port}"
        _run(
            cluster,
            "pg_ctl",
            ["-D", str(cluster.data_dir), "-l", str(directory / "postgres.log")]
            + ["-w", "-t", str(START_TIMEOUT), "-o", options, "start"],
        )
        cluster.pid = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
        asyncio.run(_create_database(cluster.port, password))
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster, cluster.url(password)


def stop_cluster(cluster: Cluster) -> None:
    """Stop the cluster (`pg_ctl stop -m fast`, as the user it runs as); remove its directory if
    it was made for this stack only."""
    if (cluster.data_dir / "postmaster.pid").is_file():
        _run(cluster, "pg_ctl", ["-D", str(cluster.data_dir), "-m", "fast", "-w", "stop"], False)
    elif cluster_is_running(cluster):
        os.kill(cluster.pid, signal.SIGINT)  # no pid file for pg_ctl: the same fast shutdown
    if cluster_is_running(cluster) and not wait_for_exit(cluster.pid, START_TIMEOUT):
        os.kill(cluster.pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
        wait_for_exit(cluster.pid, START_TIMEOUT)
    if cluster.temporary:
        shutil.rmtree(cluster.directory, ignore_errors=True)


async def _create_database(port: int, password: str) -> None:
    """Create the databases `prefect` and `mlflow` if missing, and the extension Prefect's
    migrations need."""
    import asyncpg

    for database in ("postgres", DATABASE):
        connection = await asyncpg.connect(
            host=LOOPBACK,
            port=port,
            user=ROLE,
            password=password,
            database=database,
            timeout=CONNECT_TIMEOUT,
        )
        try:
            if database == "postgres":
                exists = "SELECT 1 FROM pg_database WHERE datname = $1"
                for name in (DATABASE, TRACKING_DATABASE):
                    if not await connection.fetchval(exists, name):
                        await connection.execute(f'CREATE DATABASE "{name}"')
            else:
                await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        finally:
            await connection.close()


def _system_user() -> str | None:
    """As root, the user the cluster runs as (`initdb` refuses root); otherwise None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise UserInputError(
            f"--postgres: PostgreSQL refuses to run as root and there is no `{SYSTEM_USER}` user "
            "to run it as; `apt-get install postgresql` creates it"
        ) from None
    return SYSTEM_USER


def _cluster_directory(home: Path, run_as: str | None) -> tuple[Path, bool]:
    """Where the cluster lives, and whether that directory is this stack's only (see above)."""
    in_home = home / "postgres"
    if run_as is None or _can_reach(run_as, home):
        in_home.mkdir(mode=0o700, exist_ok=True)
        if run_as is not None:
            shutil.chown(in_home, run_as, run_as)
        return in_home, False
    for parent in SHARED_PARENTS:
        if parent.is_dir() and _can_reach(run_as, parent):
            directory = Path(tempfile.mkdtemp(prefix="trainflow-postgres-", dir=parent))
            shutil.chown(directory, run_as, run_as)
            return directory, True
    raise UserInputError(
        f"--postgres: the `{run_as}` user can reach neither {home} nor "
        f"{' nor '.join(map(str, SHARED_PARENTS))}; use a --home it can reach, or --database-url"
    )


def _can_reach(user: str, directory: Path) -> bool:
    """True when `user` may enter `directory` (every parent searchable)."""
    test = ["runuser", "-u", user, "--", "test", "-x", str(directory)]
    return subprocess.run(test, capture_output=True, cwd="/", check=False).returncode == 0


def _initialise(cluster: Cluster, password: str) -> None:
    """`initdb` with the role `prefect` and its password, then admit only password logins over
    TCP from 127.0.0.1."""
    # initdb reads the password from a file; it lives only while initdb runs, readable by the
    # cluster's owner only (stdin is no way around it: `runuser` leaves a pipe the new user
    # cannot reopen).
    password_file = Path(cluster.directory) / ".initdb-password"
    write_secret(password_file, password)
    if cluster.run_as is not None:
        shutil.chown(password_file, cluster.run_as, cluster.run_as)
    try:
        _run(
            cluster,
            "initdb",
            ["-D", str(cluster.data_dir), "-U", ROLE, f"--pwfile={password_file}"]
            + ["--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale"],
        )
    finally:
        password_file.unlink(missing_ok=True)
    # Rewritten in place, so the file keeps its owner.
    (cluster.data_dir / "pg_hba.conf").write_text(
        "# trainflow stack: password logins (scram-sha-256) over TCP from this machine only\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )


def _run(cluster: Cluster, binary: str, arguments: list[str], check: bool = True) -> None:
    """Run one of the cluster's binaries as the cluster's user, from its directory."""
    command = [str(Path(cluster.bin_dir) / binary), *arguments]
    if cluster.run_as is not None:
        command = ["runuser", "-u", cluster.run_as, "--", *command]
    completed = subprocess.run(
        command,
        cwd=cluster.directory,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if check and completed.returncode != 0:
        log = Path(cluster.directory) / "postgres.log"
        tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
        output = re.sub(r"\s+", " ", f"{completed.stdout} {completed.stderr} {tail}").strip()
        raise RuntimeError(f"{binary} failed in {cluster.directory}: {output[-2000:]}")


def cluster_is_running(cluster: Cluster) -> bool:
    """True while the cluster's postmaster runs (its pid runs `postgres` on the cluster's data,
    not a process that got the pid after the postmaster ended)."""
    if not cluster.pid or not is_alive(cluster.pid):
        return False
    try:
        command = Path(f"/proc/{cluster.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (not Linux): is_alive's answer stands
    return str(cluster.data_dir).encode() in command
