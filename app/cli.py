"""The `trainflow` command line: the parser, and `main`, which runs a subcommand and turns errors
into one line and an exit status.

Each subcommand is a module of `app/commands/` that declares its subparsers and runs them; a new
one is a new module there and one line in `SUBCOMMANDS`. Imports stay inside the commands:
`trainflow --help` and `trainflow run --help` must answer without importing TensorFlow or Prefect.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys

from app.commands import (
    EXIT_RUN_FAILED,
    EXIT_USER_ERROR,
    demo_crash,
    evaluate,
    registry,
    run,
    runs,
    stack,
)

# The subcommands' modules, in the order `trainflow --help` lists them.
SUBCOMMANDS = (run, demo_crash, evaluate, stack, registry, runs)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="trainflow",
        description="TensorFlow/Keras training orchestrated by Prefect that never loses work.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for subcommand in SUBCOMMANDS:
        subcommand.add_to(subcommands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.execute(args)
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
