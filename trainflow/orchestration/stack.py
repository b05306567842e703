"""`trainflow stack up|down`: a local Prefect server, the work pool, the deployments and a worker.

Everything lives under one PREFECT_HOME (by default `<project>/.prefect-home`: SQLite database,
logs, `stack.json` with the process ids), the server listens on 127.0.0.1 only, and `down` stops
exactly the processes `up` started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import yaml
from pydantic import BaseModel

from trainflow.errors import UserInputError
from trainflow.orchestration.prefect_server import (
    LOOPBACK,
    PREFECT_COMMAND,
    LocalServer,
    is_healthy,
)

WORK_POOL = "trainflow-local"
AUTOMATIONS_FILE = Path("deployments/automations.yaml")
STOP_TIMEOUT = 30


class Stack(BaseModel):
    """What `stack.json` records about a running stack."""

    api_url: str
    server_pid: int
    worker_pid: int


def stack_environment(project_dir: Path, home: Path, api_url: str) -> dict[str, str]:
    """The environment of the worker and of every `prefect` command aimed at the stack."""
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "TRAINFLOW_PROJECT_DIR": str(project_dir),
    }


def stack_up(project_dir: Path, home: Path, port: int, host: str = LOOPBACK) -> Stack:
    """Start the server, create the work pool, deploy `deployments/prefect.yaml`, install
    `deployments/automations.yaml`, and start a worker. Stops the server again if a step fails."""
    home.mkdir(parents=True, exist_ok=True)
    running = read_stack(home)
    if running is not None and is_healthy(running.api_url) and _alive(running.worker_pid):
        return running
    server = LocalServer(
        home=home, services=True, port=port, detached=True, log=home / "server.log", host=host
    )
    server.start()
    try:
        server.wait_until_healthy()
        environment = stack_environment(project_dir, home, server.api_url)
        _prepare_server(project_dir, environment)
    except BaseException:
        _stop_group(server.process.pid)
        raise
    with (home / "worker.log").open("a") as log:
        worker = subprocess.Popen(
            [PREFECT_COMMAND, "worker", "start", "--pool", WORK_POOL],
            cwd=project_dir,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = Stack(api_url=server.api_url, server_pid=server.process.pid, worker_pid=worker.pid)
    (home / "stack.json").write_text(stack.model_dump_json(indent=2))
    return stack


def _prepare_server(project_dir: Path, environment: dict[str, str]) -> None:
    """Create the work pool, deploy, and install the automations (once)."""
    automations = yaml.safe_load((project_dir / AUTOMATIONS_FILE).read_text())["automations"]
    commands = [
        [PREFECT_COMMAND, "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
        [
            PREFECT_COMMAND,
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            "deployments/prefect.yaml",
        ],
    ]
    for automation in automations:
        inspect = [PREFECT_COMMAND, "automation", "inspect", automation["name"]]
        if subprocess.run(inspect, env=environment, capture_output=True).returncode != 0:
            commands.append(
                [PREFECT_COMMAND, "automation", "create", "--from-json", json.dumps(automation)]
            )
    for command in commands:
        completed = subprocess.run(
            command, cwd=project_dir, env=environment, capture_output=True, text=True
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command[1:4])} failed: {completed.stdout[-2000:]}{completed.stderr[-2000:]}"
            )


def stack_down(home: Path) -> Stack:
    """Stop the worker (and its flow runs), then the server, that `stack_up` started."""
    stack = read_stack(home)
    if stack is None:
        raise UserInputError(f"no stack is running from {home} (no {home / 'stack.json'})")
    for pid in (stack.worker_pid, stack.server_pid):
        _stop_group(pid)
    (home / "stack.json").unlink()
    return stack


def read_stack(home: Path) -> Stack | None:
    """The running stack recorded under `home`, if any."""
    path = home / "stack.json"
    return Stack.model_validate(json.loads(path.read_text())) if path.is_file() else None


def _alive(pid: int) -> bool:
    """True while process `pid` runs; an exited one not yet reaped by its parent (a zombie) does
    not count."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        # The state follows the command name in parentheses, which may itself hold spaces.
        return stat.read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): os.kill's answer stands


def _stop_group(pid: int) -> None:
    """SIGTERM the process group `pid` leads; SIGKILL it if it is still there after a while."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
