"""`trainflow runs`: the runs under --artifacts, with their status and metrics."""

from __future__ import annotations

import argparse
import json
from typing import Any

from app.options import add_artifacts_option
from app.tables import print_table


def add_to(subcommands: Any, common: argparse.ArgumentParser) -> None:
    """The `runs` subcommand."""
    runs = subcommands.add_parser(
        "runs", parents=[common], help="list runs with their status and metrics"
    )
    runs.add_argument("--json", action="store_true", help="print the runs as a JSON list")
    add_artifacts_option(runs)
    runs.set_defaults(execute=list_runs_command)


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
    print_table(header, rows)
    return 0


def _blank_if_none(value: object) -> str:
    return "" if value is None else str(value)
