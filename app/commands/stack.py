"""`trainflow stack up|down`: the local stack (app/stack/) started or stopped from the repository
root, and how to reach it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.commands import EXIT_USER_ERROR
from app.options import add_model_options, model_from_arguments
from app.stack.options import StackOptions


def add_to(subcommands: Any, common: argparse.ArgumentParser) -> None:
    """The `stack` subcommand: the action, where the stack lives, and how it is built."""
    stack = subcommands.add_parser(
        "stack",
        parents=[common],
        help="start or stop a local Prefect server, work pool, deployments and workers",
        description="up: start `prefect server start` on 127.0.0.1 (SQLite database under "
        ".prefect-home, or PostgreSQL), create the process work pool, deploy "
        "deployments/prefect.yaml and start the workers; down: stop what up started. Run it "
        "from the repository root.",
    )
    stack.add_argument("action", choices=["up", "down"])
    # How the stack is built comes from StackOptions; --home, where it lives, is an argument of
    # its own, in its place among them.
    add_model_options(stack, StackOptions, ["port", "host", "ui_host"])
    stack.add_argument(
        "--home",
        type=Path,
        default=Path(".prefect-home"),
        metavar="DIR",
        help="home of the stack: database, secrets, logs, workers, process ids "
        "(default: .prefect-home)",
    )
    add_model_options(
        stack,
        StackOptions,
        ["workers", "postgres", "database_url", "auth", "mlflow", "mlflow_port"],
    )
    stack.set_defaults(execute=stack_command)


def stack_command(args: argparse.Namespace) -> int:
    """`trainflow stack up|down`: start or stop the local stack; prints how to reach it, never a
    secret (the database URL is shown without its password, the auth string by its file)."""
    options = model_from_arguments(args, StackOptions)
    if options is None:
        return EXIT_USER_ERROR
    from app.stack.lifecycle import stack_down, stack_up

    project_dir = Path.cwd()
    if not (project_dir / "deployments" / "prefect.yaml").is_file():
        print("trainflow: error: run `trainflow stack` from the repository root", file=sys.stderr)
        return EXIT_USER_ERROR
    home = args.home.resolve()
    if args.action == "down":
        stack = stack_down(home)
        pids = stack.worker_pids
        stopped = [
            f"the worker (pid {pids[0]})"
            if len(pids) == 1
            else f"{len(pids)} workers (pids {', '.join(map(str, pids))})",
            f"the server (pid {stack.server_pid})",
        ]
        if stack.mlflow_pid is not None:
            stopped.append(f"the MLflow server (pid {stack.mlflow_pid})")
        if stack.postgres is not None:
            stopped.append(f"PostgreSQL (pid {stack.postgres.pid})")
        print(f"Stopped {', '.join(stopped[:-1])} and {stopped[-1]}")
        return 0
    stack = stack_up(project_dir, home, options)
    if stack.postgres is not None:
        where = f"PostgreSQL in {stack.postgres.directory}"
        if stack.postgres.temporary:
            where += ", which `stack down` removes"
        print(f"Database {stack.database_url} ({where})")
    elif stack.database_url and not stack.database_url.startswith("sqlite"):
        print(f"Database {stack.database_url}")
    pids = stack.worker_pids
    started = (
        f"worker pid {pids[0]}"
        if len(pids) == 1
        else f"{len(pids)} workers (pids {', '.join(map(str, pids))})"
    )
    print(
        f"Prefect server {stack.api_url} (UI: {stack.ui_url}), {started}. "
        f"Point prefect commands at it with:\n  export PREFECT_API_URL={stack.api_url}"
    )
    if stack.auth_file is not None:
        print(f'  export PREFECT_API_AUTH_STRING="$(cat {stack.auth_file})"')
    if stack.mlflow_url is not None:
        print(
            f"MLflow tracking server {stack.mlflow_url} (runs in {stack.mlflow_database_url}), "
            "which the workers' runs log to; for runs from this shell:\n"
            f"  export MLFLOW_TRACKING_URI={stack.mlflow_url}"
        )
    return 0
