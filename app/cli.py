"""The `trainflow` command line.

Imports stay inside the subcommands: `trainflow --help` and `trainflow run --help` must answer
without importing TensorFlow or Prefect.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from trainflow.config import RunConfig

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1
DEMO_CHECKPOINT_EVERY = 25


def _field_help(name: str) -> str:
    """The option's help: the config field's description and its default (flags have none)."""
    field = RunConfig.model_fields[name]
    if isinstance(field.default, bool):
        return field.description
    default = "off" if field.default is None else field.default
    return f"{field.description} (default: {default})"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="trainflow",
        description="TensorFlow/Keras training orchestrated by Prefect that never loses work.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    training = argparse.ArgumentParser(add_help=False, parents=[common])
    training.add_argument("--dataset", metavar="SOURCE", help=_field_help("dataset"))
    training.add_argument("--model", choices=["mlp", "cnn"], help=_field_help("model"))
    training.add_argument("--epochs", type=int, metavar="N", help=_field_help("epochs"))
    training.add_argument("--batch-size", type=int, metavar="N", help=_field_help("batch_size"))
    training.add_argument("--patience", type=int, metavar="N", help=_field_help("patience"))
    training.add_argument("--seed", type=int, metavar="N", help=_field_help("seed"))
    training.add_argument("--artifacts", type=Path, metavar="DIR", help=_field_help("artifacts"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        parents=[training],
        help="train, persist and evaluate a model (resumes a run given by --run-name)",
        description="Prepare data, train with checkpoints, save weights and model, evaluate the "
        "saved model. Running an unfinished run's name again resumes it from its checkpoint.",
    )
    run.add_argument(
        "--run-name",
        metavar="NAME",
        help=f"{RunConfig.model_fields['run_name'].description} (default: a new unique name)",
    )
    run.add_argument("--fresh", action="store_true", default=None, help=_field_help("fresh"))
    run.add_argument(
        "--checkpoint-every", type=int, metavar="N", help=_field_help("checkpoint_every")
    )
    run.add_argument(
        "--keep-checkpoints", type=int, metavar="K", help=_field_help("keep_checkpoints")
    )
    run.add_argument(
        "--deterministic", action="store_true", default=None, help=_field_help("deterministic")
    )
    run.add_argument("--fail-at-epoch", type=int, metavar="K", help=_field_help("fail_at_epoch"))
    run.add_argument("--kill-at-step", type=int, metavar="STEP", help=_field_help("kill_at_step"))
    run.add_argument(
        "--json", action="store_true", help="print one JSON summary on stdout (logs go to stderr)"
    )

    demo = commands.add_parser(
        "demo-crash",
        parents=[training],
        help="kill a training run with SIGKILL, resume it, and report what it cost",
        description="Train with `trainflow run`, SIGKILL the process right after a chosen or "
        "random step, run it again with the same run name, and report where it died, which "
        "checkpoint it resumed from, the steps redone and the time lost. With --verify, also "
        "train uninterrupted and compare the final weights bit for bit.",
    )
    demo.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        default=DEMO_CHECKPOINT_EVERY,
        help=f"checkpoint every N steps (default: {DEMO_CHECKPOINT_EVERY})",
    )
    demo.add_argument(
        "--kill-at-step",
        type=int,
        metavar="STEP",
        help="kill right after this global step (default: a random step)",
    )
    demo.add_argument(
        "--verify",
        action="store_true",
        help="also train uninterrupted (deterministically) and compare the final weights",
    )

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="evaluate a finished run's saved model again and rewrite its report",
        description="Load a finished run's saved files, evaluate them on the run's own test data or "
        "on --dataset, and rewrite evaluation.json and the report under RUN_DIR/reports.",
    )
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="e.g. artifacts/runs/NAME")
    evaluate.add_argument(
        "--dataset", metavar="SOURCE", help="data to evaluate on (default: the run's)"
    )

    stack = commands.add_parser(
        "stack",
        parents=[common],
        help="start or stop a local Prefect server, work pool, deployments and worker",
        description="up: start `prefect server start` on 127.0.0.1 (database under "
        ".prefect-home), create the process work pool, deploy deployments/prefect.yaml and start a "
        "worker; down: stop the processes up started. Run it from the repository root.",
    )
    stack.add_argument("action", choices=["up", "down"])
    stack.add_argument("--port", type=int, default=4200, help="server port (default: 4200)")
    stack.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address the server listens on (default: 127.0.0.1, this machine only; 0.0.0.0 "
        "opens it, without authentication, to the network)",
    )
    stack.add_argument(
        "--home",
        type=Path,
        default=Path(".prefect-home"),
        metavar="DIR",
        help="PREFECT_HOME of the stack: database, logs, process ids (default: .prefect-home)",
    )

    models = commands.add_parser(
        "models", parents=[common], help="list the model registry's versions and the champion"
    )
    promote = commands.add_parser(
        "promote", parents=[common], help="make a registered run's model the champion"
    )
    promote.add_argument("run_name", metavar="RUN")
    rollback = commands.add_parser(
        "rollback", parents=[common], help="make the previous champion the champion again"
    )
    runs = commands.add_parser(
        "runs", parents=[common], help="list runs with their status and metrics"
    )
    runs.add_argument("--json", action="store_true", help="print the runs as a JSON list")
    for listing in (runs, models, promote, rollback):
        listing.add_argument(
            "--artifacts",
            type=Path,
            default=Path("artifacts"),
            metavar="DIR",
            help="root directory of all outputs (default: artifacts)",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "demo-crash":
            return _demo_crash(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "stack":
            return _stack(args)
        if args.command in ("models", "promote", "rollback"):
            return _registry(args)
        return _list_runs(args)
    except Exception as error:
        from trainflow.errors import is_user_input_error

        if args.debug:
            raise
        if is_user_input_error(error):
            print(f"trainflow: error: {error}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(
            f"trainflow: run failed: {type(error).__name__}: {error} (run again with the same "
            "--run-name to resume; --debug shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_RUN_FAILED


def _config_from(args: argparse.Namespace) -> RunConfig | None:
    options = {name: getattr(args, name) for name in RunConfig.model_fields if hasattr(args, name)}
    try:
        return RunConfig(**{name: value for name, value in options.items() if value is not None})
    except ValidationError as error:
        for problem in error.errors():
            option = "--" + "-".join(str(part) for part in problem["loc"]).replace("_", "-")
            message = problem["msg"].removeprefix("Value error, ")
            print(f"trainflow: error: {option or 'options'}: {message}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    config = _config_from(args)
    if config is None:
        return EXIT_USER_ERROR
    from trainflow.data.sources import locate_source_files

    locate_source_files(config.source)  # a missing path fails here, before any server starts
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        from trainflow.orchestration.prefect_server import LocalServer

        server = LocalServer().start()  # it boots while TensorFlow is imported below
        os.environ["PREFECT_API_URL"] = server.api_url
        # At exit, after Prefect's own exit handlers (registered later, run earlier) have sent
        # the last logs and events to it.
        atexit.register(server.stop)
    from flows.training import training_flow

    if not args.debug:
        from trainflow.errors import hide_user_error_tracebacks

        hide_user_error_tracebacks()  # Prefect logs a failed task's traceback to the console
    if server is not None:
        server.wait_until_healthy()
    # Libraries print to stdout; with --json, stdout carries the summary and nothing else.
    output = sys.stderr if args.json else sys.stdout
    with contextlib.redirect_stdout(output):
        summary = training_flow(config)
    if args.json:
        print(summary.model_dump_json(indent=2))
    else:
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
    return 0


def _demo_crash(args: argparse.Namespace) -> int:
    config = _config_from(args)
    if config is None:
        return EXIT_USER_ERROR
    from app.demo import demo_crash, format_report

    report = demo_crash(config, args.verify)
    print(format_report(report))
    return 0 if report.identical in (None, True) else EXIT_RUN_FAILED


def _evaluate(args: argparse.Namespace) -> int:
    from trainflow.environment import configure_environment

    configure_environment()
    from app.reevaluate import reevaluate_run

    evaluation = reevaluate_run(args.run_dir, args.dataset)
    print(
        f"Test accuracy {evaluation.accuracy:.4f}, loss {evaluation.loss:.4f}, macro F1 "
        f"{evaluation.report.macro_f1:.4f} on {evaluation.num_examples} examples; report in "
        f"{evaluation.path.parent / 'reports'}"
    )
    return 0


def _stack(args: argparse.Namespace) -> int:
    from trainflow.orchestration.stack import stack_down, stack_up

    project_dir = Path.cwd()
    if not (project_dir / "deployments" / "prefect.yaml").is_file():
        print("trainflow: error: run `trainflow stack` from the repository root", file=sys.stderr)
        return EXIT_USER_ERROR
    home = args.home.resolve()
    if args.action == "down":
        stack = stack_down(home)
        print(
            f"Stopped the worker (pid {stack.worker_pid}) and the server (pid {stack.server_pid})"
        )
        return 0
    stack = stack_up(project_dir, home, args.port, args.host)
    print(
        f"Prefect server {stack.api_url} (UI: {stack.api_url.removesuffix('/api')}), worker pid "
        f"{stack.worker_pid}. Point prefect commands at it with:\n"
        f"  export PREFECT_API_URL={stack.api_url}"
    )
    return 0


def _registry(args: argparse.Namespace) -> int:
    from trainflow.paths import ArtifactPaths
    from trainflow.runs.registry import Registry

    registry = Registry(ArtifactPaths.at(args.artifacts))
    if args.command == "promote":
        print(f"Champion: {registry.promote(args.run_name).run_name}")
        return 0
    if args.command == "rollback":
        print(f"Champion: {registry.rollback().run_name}")
        return 0
    champion = registry.champion()
    versions = registry.versions()
    if not versions:
        print(f"No models registered under {args.artifacts}")
        return 0
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


def _list_runs(args: argparse.Namespace) -> int:
    from trainflow.paths import ArtifactPaths
    from trainflow.runs.records import list_runs

    records = list_runs(ArtifactPaths.at(args.artifacts))
    if args.json:
        print(json.dumps([record.model_dump(mode="json") for record in records], indent=2))
        return 0
    if not records:
        print(f"No runs under {args.artifacts}")
        return 0
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


if __name__ == "__main__":
    sys.exit(main())
