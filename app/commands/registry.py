"""`trainflow models`, `promote` and `rollback`: the model registry's versions and its champion."""

from __future__ import annotations

import argparse
from typing import Any

from app.options import add_artifacts_option
from app.tables import print_table


def add_to(subcommands: Any, common: argparse.ArgumentParser) -> None:
    """The `models`, `promote` and `rollback` subcommands, each on the registry under
    --artifacts."""
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
    for command in (models, promote, rollback):
        add_artifacts_option(command)
        command.set_defaults(execute=registry_command)


def _mirror_champion(registry: Any, run_name: str) -> None:
    """Move MLflow's alias `champion` too, when the champion's run was tracked (its settings say
    where: its --mlflow, or this shell's MLFLOW_TRACKING_URI, and its registered model)."""
    from trainflow.config import RunConfig

    parameters = registry.version(run_name).parameters
    tracking = ("mlflow", "experiment", "registered_model")
    config = RunConfig(**{name: parameters[name] for name in tracking if name in parameters})
    if config.tracking_uri is None:
        return
    from trainflow.tracking.registry import point_champion_at

    version = point_champion_at(config.tracking_uri, config.registered_model_name, run_name)
    if version is not None:
        print(f"MLflow: {config.registered_model_name}@champion is version {version}")


def registry_command(args: argparse.Namespace) -> int:
    from trainflow.paths import ArtifactPaths
    from trainflow.runs.registry import Registry

    artifacts = ArtifactPaths.at(args.artifacts)
    registry = Registry(artifacts)
    if args.command in ("promote", "rollback"):
        champion = (
            registry.promote(args.run_name) if args.command == "promote" else registry.rollback()
        )
        print(f"Champion: {champion.run_name}")
        _mirror_champion(registry, champion.run_name)
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
    print_table(header, rows)
    return 0
