"""`trainflow evaluate`: a finished run's saved model evaluated again (app/reevaluate.py)."""

from __future__ import annotations

import argparse
from typing import Any


def add_to(subcommands: Any, common: argparse.ArgumentParser) -> None:
    """The `evaluate` subcommand: a run directory, and the data to evaluate on."""
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
    evaluate.set_defaults(execute=evaluate_command)


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
