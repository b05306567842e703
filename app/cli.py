"""The `trainflow` command line: the parser, and `main`, which runs a subcommand and turns errors
into one line and an exit status.

The training options come from `RunConfig` (app/options.py). Imports stay inside the subcommands:
`trainflow --help` and `trainflow run --help` must answer without importing TensorFlow or Prefect.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from pathlib import Path

from app import commands
from app.commands import EXIT_RUN_FAILED, EXIT_USER_ERROR
from app.options import add_config_options
from trainflow.config import DEFAULT_TOLERANCE, RunConfig

DEMO_CHECKPOINT_EVERY = 25
# Options of `trainflow run` that the crash demo sets itself.
DEMO_OWN_FIELDS = {"fresh", "fail_at_epoch", "kill_at_step"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="trainflow",
        description="TensorFlow/Keras training orchestrated by Prefect that never loses work.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = subcommands.add_parser(
        "run",
        parents=[common],
        help="train, persist and evaluate a model (resumes a run given by --run-name)",
        description="Prepare data, train with checkpoints, save weights and model, evaluate the "
        "saved model. Running an unfinished run's name again resumes it from its checkpoint.",
    )
    add_config_options(run, RunConfig.model_fields)
    run.add_argument(
        "--json", action="store_true", help="print one JSON summary on stdout (logs go to stderr)"
    )

    retrain = subcommands.add_parser(
        "retrain",
        parents=[common],
        help="train a challenger and promote it if it is at least as good as the champion",
        description="The nightly retraining flow, run here: train a new model (as `trainflow "
        "run`), register it in the model registry, and make it the champion when its test "
        "accuracy is at least the champion's minus --tolerance, both measured on its test data.",
    )
    add_config_options(retrain, RunConfig.model_fields)
    retrain.add_argument(
        "--tolerance",
        type=fraction,
        default=DEFAULT_TOLERANCE,
        metavar="T",
        help=f"accuracy the challenger may lose against the champion (default: {DEFAULT_TOLERANCE})",
    )
    retrain.add_argument(
        "--json", action="store_true", help="print the decision as JSON on stdout (logs on stderr)"
    )

    demo = subcommands.add_parser(
        "demo-crash",
        parents=[common],
        help="kill a training run with SIGKILL, resume it, and report what it cost",
        description="Train with `trainflow run`, SIGKILL the process right after a chosen or "
        "random step, run it again with the same run name, and report where it died, which "
        "checkpoint it resumed from, the steps redone and the time lost. With --verify, also "
        "train uninterrupted and compare the final weights bit for bit.",
    )
    add_config_options(
        demo,
        [field for field in RunConfig.model_fields if field not in DEMO_OWN_FIELDS],
        checkpoint_every=DEMO_CHECKPOINT_EVERY,
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

    evaluate = subcommands.add_parser(
        "evaluate",
        parents=[common],
        help="evaluate a finished run's saved model again and rewrite its report",
        description="Load a finished run's saved files, evaluate them on the run's own test data or "
        "on --dataset, and rewrite evaluation.json and the report under RUN_DIR/reports.",
    )
    evaluate.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="e.g. artifacts/runs/NAME, or s3://BUCKET/PREFIX/runs/NAME",
    )
    evaluate.add_argument(
        "--dataset", metavar="SOURCE", help="data to evaluate on (default: the run's)"
    )

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
    stack.add_argument("--port", type=int, default=4200, help="server port (default: 4200)")
    stack.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address the server listens on (default: 127.0.0.1, this machine only; any other, "
        "such as 0.0.0.0, opens it to the network and turns on --auth)",
    )
    stack.add_argument(
        "--ui-host",
        metavar="ADDRESS",
        help="address browsers reach the server at, for its UI (default: --host, or this "
        "machine's address when --host is 0.0.0.0 or ::)",
    )
    stack.add_argument(
        "--home",
        type=Path,
        default=Path(".prefect-home"),
        metavar="DIR",
        help="home of the stack: database, secrets, logs, workers, process ids "
        "(default: .prefect-home)",
    )
    stack.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="process workers to start, each with its own directory under the home (default: 1)",
    )
    database = stack.add_mutually_exclusive_group()
    database.add_argument(
        "--postgres",
        action="store_true",
        help="run the server on a local PostgreSQL cluster under the home, started and stopped "
        "with the stack (default: SQLite)",
    )
    database.add_argument(
        "--database-url",
        metavar="URL",
        help="run the server on an existing PostgreSQL server: "
        "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE",
    )
    stack.add_argument(
        "--auth",
        action="store_true",
        help="require Prefect basic auth (the secret in HOME/auth) even on 127.0.0.1",
    )

    models = subcommands.add_parser(
        "models", parents=[common], help="list the model registry's versions and the champion"
    )
    promote = subcommands.add_parser(
        "promote", parents=[common], help="make a registered run's model the champion"
    )
    promote.add_argument("run_name", metavar="RUN")
    rollback = subcommands.add_parser(
        "rollback", parents=[common], help="make the previous champion the champion again"
    )
    runs = subcommands.add_parser(
        "runs", parents=[common], help="list runs with their status and metrics"
    )
    runs.add_argument("--json", action="store_true", help="print the runs as a JSON list")
    for listing in (runs, models, promote, rollback):
        add_config_options(
            listing, ["artifacts"], artifacts=RunConfig.model_fields["artifacts"].default
        )
    return parser


def fraction(text: str) -> float:
    """An option's value between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1")
    return value


SUBCOMMANDS = {
    "run": commands.run_command,
    "retrain": commands.retrain_command,
    "demo-crash": commands.demo_crash_command,
    "evaluate": commands.evaluate_command,
    "stack": commands.stack_command,
    "models": commands.registry_command,
    "promote": commands.registry_command,
    "rollback": commands.registry_command,
    "runs": commands.list_runs_command,
}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return SUBCOMMANDS[args.command](args)
    except Exception as error:
        from trainflow.errors import OwnershipLostError, is_user_input_error

        if args.debug:
            raise
        if is_user_input_error(error):
            print(f"trainflow: error: {error}", file=sys.stderr)
            return EXIT_USER_ERROR
        if isinstance(error, OwnershipLostError):  # another process runs it now: not to resume
            print(f"trainflow: error: {error}", file=sys.stderr)
            return EXIT_RUN_FAILED
        print(
            f"trainflow: run failed: {type(error).__name__}: {error} (run again with the same "
            "--run-name to resume; --debug shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_RUN_FAILED


def entry_point() -> None:
    """The `trainflow` command: `main`, then exit without the interpreter's teardown.

    Once a command has returned and every exit handler has run (Prefect's log and event queues
    drained, the temporary server stopped, the logs flushed), nothing is left to save, but
    tearing down the modules and objects of TensorFlow and Keras took 1.6 s of a 20 s run here.
    A command that raised keeps the ordinary exit."""
    exit_status: list[int] = []

    def exit_now() -> None:
        if exit_status:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exit_status[0])

    atexit.register(exit_now)  # registered first, so it runs after every other exit handler
    exit_status.append(main())
    sys.exit(exit_status[0])


if __name__ == "__main__":
    entry_point()
