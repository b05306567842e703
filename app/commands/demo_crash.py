"""`trainflow demo-crash`: a training run killed with SIGKILL and resumed, and what it cost
(app/demo.py)."""

from __future__ import annotations

import argparse
from typing import Any

from app.commands import EXIT_RUN_FAILED, EXIT_USER_ERROR
from app.options import add_model_options, config_from_arguments
from trainflow.config import RunConfig

DEMO_CHECKPOINT_EVERY = 25
# Options of `trainflow run` that the crash demo sets itself.
DEMO_OWN_FIELDS = {"fresh", "fail_at_epoch", "kill_at_step"}


def add_to(subcommands: Any, common: argparse.ArgumentParser) -> None:
    """The `demo-crash` subcommand: the training options, and where to kill the run."""
    demo = subcommands.add_parser(
        "demo-crash",
        parents=[common],
        help="kill a training run with SIGKILL, resume it, and report what it cost",
        description="Train with `trainflow run`, SIGKILL the process right after a chosen or "
        "random step, run it again with the same run name, and report where it died, which "
        "checkpoint it resumed from, the steps redone and the time lost. With --verify, also "
        "train uninterrupted and compare the final weights bit for bit.",
    )
    add_model_options(
        demo,
        RunConfig,
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
    demo.set_defaults(execute=demo_crash_command)


def demo_crash_command(args: argparse.Namespace) -> int:
    config = config_from_arguments(args)
    if config is None:
        return EXIT_USER_ERROR
    from app.demo import demo_crash, format_report

    report = demo_crash(config, args.verify)
    print(format_report(report))
    return 0 if report.identical in (None, True) else EXIT_RUN_FAILED
