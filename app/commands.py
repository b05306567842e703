"""What each `trainflow` subcommand does, given its parsed arguments; each returns the exit status.

Imports stay inside the functions: `trainflow --help` must answer without importing TensorFlow or
Prefect.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.flow_runs import flow_with_server
from app.options import config_from_arguments

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1


def run_command(args: argparse.Namespace) -> int:
    """`trainflow run`: the training flow, and its summary."""

    def training() -> Callable[[Any], Any]:
        from flows.training import training_flow

        return training_flow

    summary = flow_with_server(args, training)
    if summary is None:
        return EXIT_USER_ERROR
    if args.json:
        print(summary.model_dump_json(indent=2))
    else:
        _print_summary(summary)
    return 0


def retrain_command(args: argparse.Namespace) -> int:
    """`trainflow retrain`: the champion/challenger flow, and its decision."""

    def retraining() -> Callable[[Any], Any]:
        from flows.retraining import retraining_flow

        return lambda config: retraining_flow(config, tolerance=args.tolerance)

    decision = flow_with_server(args, retraining)
    if decision is None:
        return EXIT_USER_ERROR
    if args.json:
        print(decision.model_dump_json(indent=2))
    else:
        verdict = "promoted to champion" if decision.promoted else "not promoted"
        print(f"Run {decision.run_name} {verdict}: {decision.reason}")
    return 0


def _print_summary(summary: Any) -> None:
    resumed = (
        "" if summary.resumed_from is None else f", resumed after epoch {summary.resumed_from}"
    )
    rows = [
        ("run", summary.run_name),
        ("epochs", f"{summary.epochs_completed} (best {summary.best_epoch}{resumed})"),
        ("test accuracy", f"{summary.test_accuracy:.4f}"),
        ("test loss", f"{summary.test_loss:.4f}"),
        ("macro F1", f"{summary.macro_f1:.4f}"),
        ("model", str(summary.model_path)),
        ("report", str(summary.reports_dir)),
    ]
    _print_table(("", ""), rows)


def demo_crash_command(args: argparse.Namespace) -> int:
    config = config_from_arguments(args)
    if config is None:
        return EXIT_USER_ERROR
    from app.demo import demo_crash, format_report

    report = demo_crash(config, args.verify)
    print(format_report(report))
    return 0 if report.identical in (None, True) else EXIT_RUN_FAILED


def evaluate_command(args: argparse.Namespace) -> int:
    from trainflow.environment import configure_environment

    configure_environment()
    from app.reevaluate import reevaluate_run, run_paths_of

    evaluation = reevaluate_run(args.run_dir, args.dataset)
    storage = run_paths_of(args.run_dir).storage
    print(
        f"Test accuracy {evaluation.accuracy:.4f}, loss {evaluation.loss:.4f}, macro F1 "
        f"{evaluation.report.macro_f1:.4f} on {evaluation.num_examples} examples; report in "
        f"{storage.location(evaluation.path.parent / 'reports')}"
    )
    return 0


def stack_command(args: argparse.Namespace) -> int:
    """`trainflow stack up|down`: start or stop the local stack; prints how to reach it, never a
    secret (the database URL is shown without its password, the auth string by its file)."""
    from app.stack.lifecycle import StackOptions, stack_down, stack_up
    from trainflow.errors import UserInputError

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
        if stack.postgres is not None:
            stopped.append(f"PostgreSQL (pid {stack.postgres.pid})")
        print(f"Stopped {', '.join(stopped[:-1])} and {stopped[-1]}")
        return 0
    if args.workers < 1:
        raise UserInputError(f"--workers {args.workers}: give 1 or more")
    options = StackOptions(
        port=args.port,
        host=args.host,
        workers=args.workers,
        postgres=args.postgres,
        database_url=args.database_url,
        auth=args.auth,
        ui_host=args.ui_host,
    )
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
    return 0


def registry_command(args: argparse.Namespace) -> int:
    from trainflow.paths import ArtifactPaths
    from trainflow.runs.registry import Registry

    artifacts = ArtifactPaths.at(args.artifacts)
    registry = Registry(artifacts)
    if args.command == "promote":
        print(f"Champion: {registry.promote(args.run_name).run_name}")
        return 0
    if args.command == "rollback":
        print(f"Champion: {registry.rollback().run_name}")
        return 0
    champion = registry.champion()
    versions = registry.versions()
    if not versions:
        print(f"No models registered under {artifacts.location}")
        return 0
    print(f"Models registered under {artifacts.location}:")
    header = ("RUN", "STATUS", "TEST ACCURACY", "DATA", "CODE", "REGISTERED", "REASON")
    rows = [
        (
            version.run_name,
            "champion" if champion and champion.run_name == version.run_name else version.decision,
            f"{version.test_accuracy:.4f}",
            version.data_fingerprint,
            version.code_version,
            version.registered_at,
            version.reason,
        )
        for version in versions
    ]
    _print_table(header, rows)
    return 0


def _print_table(header: tuple[str, ...], rows: list[tuple]) -> None:
    widths = [
        max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))
    ]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def list_runs_command(args: argparse.Namespace) -> int:
    from trainflow.paths import ArtifactPaths
    from trainflow.runs.records import list_runs

    artifacts = ArtifactPaths.at(args.artifacts)
    records = list_runs(artifacts)
    if args.json:
        listing = [
            {**record.model_dump(mode="json"), "location": artifacts.run(record.run_name).location}
            for record in records
        ]
        print(json.dumps(listing, indent=2))
        return 0
    if not records:
        print(f"No runs under {artifacts.location}")
        return 0
    print(f"Runs under {artifacts.location}:")
    header = ("RUN", "STATUS", "EPOCHS", "RESUMED FROM", "TEST ACCURACY", "UPDATED")
    rows = [
        (
            record.run_name,
            record.status,
            _blank_if_none(record.epochs_completed),
            _blank_if_none(record.resumed_from),
            "" if record.test_accuracy is None else f"{record.test_accuracy:.4f}",
            record.updated_at,
        )
        for record in records
    ]
    _print_table(header, rows)
    return 0


def _blank_if_none(value: object) -> str:
    return "" if value is None else str(value)
