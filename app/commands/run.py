"""`trainflow run` (the training flow) and `trainflow retrain` (the champion/challenger flow), both
run from the command line by `app/flow_runs.py`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from app.commands import EXIT_USER_ERROR
from app.flow_runs import flow_with_server
from app.options import add_model_options
from app.tables import print_table
from trainflow.config import DEFAULT_TOLERANCE, RunConfig


def add_to(subcommands: Any, common: argparse.ArgumentParser) -> None:
    """The `run` and `retrain` subcommands."""
    run = subcommands.add_parser(
        "run",
        parents=[common],
        help="train, persist and evaluate a model (resumes a run given by --run-name)",
        description="Prepare data, train with checkpoints, save weights and model, evaluate the "
        "saved model. Running an unfinished run's name again resumes it from its checkpoint.",
    )
    add_model_options(run, RunConfig, RunConfig.model_fields)
    run.add_argument(
        "--json", action="store_true", help="print one JSON summary on stdout (logs go to stderr)"
    )
    run.set_defaults(execute=run_command)

    retrain = subcommands.add_parser(
        "retrain",
        parents=[common],
        help="train a challenger and promote it if it is at least as good as the champion",
        description="The nightly retraining flow, run here: train a new model (as `trainflow "
        "run`), register it in the model registry, and make it the champion when its test "
        "accuracy is at least the champion's minus --tolerance, both measured on its test data.",
    )
    add_model_options(retrain, RunConfig, RunConfig.model_fields)
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
    retrain.set_defaults(execute=retrain_command)


def fraction(text: str) -> float:
    """An option's value between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 1")
    return value


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
    print_table(("", ""), rows)
