"""The cost of tracking a run in MLflow: a 10-epoch `trainflow run` logging to a local `mlflow
server` (each epoch sent as its checkpoint commits, then the results, reports and the Keras model)
against the same run untracked, both against a running local Prefect server."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path

from bench.harness import MNIST_COMMAND_SOURCE, MNIST_SOURCE, TRAINFLOW, Row, alternate, spread

TARGET = 0.03  # of the run's wall time


def tracking_cost(api_url: str, directory: Path, repeats: int, epochs: int) -> Row:
    """(issue 20) Whole-run wall time with `--mlflow` against without, alternately."""
    from app.stack.mlflow_server import MlflowServer

    environment = {
        key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"
    } | {"PREFECT_API_URL": api_url}
    run_numbers = iter(range(1_000_000))
    with MlflowServer(directory / "mlflow") as server:

        def run(*tracking: str) -> float:
            arguments = [TRAINFLOW, "run", "--dataset", MNIST_SOURCE, "--epochs", str(epochs)]
            arguments += ["--artifacts", str(directory / "artifacts"), *tracking]
            arguments += ["--run-name", f"tracking-{next(run_numbers)}"]
            began = time.monotonic()
            subprocess.run(arguments, env=environment, check=True, capture_output=True)
            return time.monotonic() - began

        times = alternate(
            {"tracked": lambda: run("--mlflow", server.url), "untracked": run}, repeats
        )
    costs = [
        tracked / untracked - 1 for tracked, untracked in zip(times["tracked"], times["untracked"])
    ]
    cost = statistics.median(costs)
    return Row(
        f"cost of tracking in MLflow, {epochs} epochs of mlp on MNIST test split",
        f"{cost:+.1%}: tracked {spread(times['tracked'])} vs untracked {spread(times['untracked'])}",
        f"<= {TARGET:.0%}",
        cost <= TARGET,
        f"trainflow run --dataset {MNIST_COMMAND_SOURCE} --epochs {epochs} --mlflow URL vs the "
        "same without --mlflow (a local mlflow server)",
        {
            "cost": cost,
            "tracked": statistics.median(times["tracked"]),
            "untracked": statistics.median(times["untracked"]),
        },
    )
