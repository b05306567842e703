"""The orchestration overhead: a whole `trainflow run` against `bench/plain_keras.py` doing the
same work, and the fixed costs that make up the difference (`./dev bench --only-overhead` runs just
these, a quicker pass for a quiet machine), and the cost of tracking in MLflow."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    MNIST_TEST_SPLIT,
    REPO_ROOT,
    TRAINFLOW,
    Row,
    alternate,
    spread,
    write_synthetic_source,
)


def _timed_json(arguments: list[str], environment: dict[str, str]) -> tuple[float, dict]:
    """Seconds for a command that prints one JSON object last on stdout, and that object."""
    began = time.monotonic()
    completed = subprocess.run(
        arguments,
        check=True,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    seconds = time.monotonic() - began
    return seconds, json.loads(completed.stdout[completed.stdout.rfind("\n{") + 1 :])


@dataclass
class Workload:
    """An IDX directory both sides train on, as the table names it and as a reader types it."""

    directory: Path
    label: str
    typed: str


MNIST_WORKLOAD = Workload(MNIST_TEST_SPLIT, "MNIST test split", "../shared/data/mnist-t10k")


def orchestration_overhead(api_url: str, directory: Path, repeats: int, epochs: int) -> list[Row]:
    """(1) `trainflow run` vs the plain Keras script doing the same work, wall time ratio, against
    the running local Prefect server at `api_url` and with the server `trainflow run` starts for
    itself, each with the issue's target."""
    without_server = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    running = {**without_server, "PREFECT_API_URL": api_url}
    comparisons = [("against a running local server", running, "running", 1.15)]
    comparisons.append(("with its own temporary server", without_server, "own", 1.25))
    return [
        _trainflow_against_plain(mode, environment, directory / name, repeats, epochs, target)
        for mode, environment, name, target in comparisons
    ]


def _trainflow_against_plain(
    mode: str,
    environment: dict[str, str],
    directory: Path,
    repeats: int,
    epochs: int,
    target: float,
    workload: Workload = MNIST_WORKLOAD,
) -> Row:
    """One comparison against the largest wall-time ratio `target`; also the epochs each side
    trained (EarlyStopping may stop them apart)."""
    trainflow = [TRAINFLOW, "run", "--json", "--dataset", f"idx:{workload.directory}"]
    trainflow += ["--epochs", str(epochs), "--artifacts", str(directory / "artifacts")]
    plain = [sys.executable, str(REPO_ROOT / "bench" / "plain_keras.py"), str(workload.directory)]
    plain += [str(directory / "plain"), "--epochs", str(epochs)]
    run_numbers = iter(range(1_000_000))  # a new run each time: a finished run does not train again
    epochs_trained: dict[str, set[int]] = {"trainflow": set(), "plain": set()}

    def side(name: str, arguments: list[str]) -> float:
        seconds, summary = _timed_json(arguments, environment)
        epochs_trained[name].add(summary["epochs_completed"])
        return seconds

    times = alternate(
        {
            "trainflow": lambda: side(
                "trainflow", [*trainflow, "--run-name", f"bench-{next(run_numbers)}"]
            ),
            "plain": lambda: side("plain", plain),
        },
        repeats,
    )
    ratios = [ours / theirs for ours, theirs in zip(times["trainflow"], times["plain"])]
    trained = ", ".join(
        f"{name} {'/'.join(map(str, sorted(values)))}" for name, values in epochs_trained.items()
    )
    return Row(
        f"orchestration overhead, {epochs} epochs of mlp on {workload.label}, {mode}",
        f"ratio {spread(ratios, unit='x')}; trainflow {spread(times['trainflow'])}, "
        f"plain Keras {spread(times['plain'])}; epochs trained: {trained}",
        f"<= {target:.2f}",
        statistics.median(ratios) <= target,
        f"trainflow run --dataset idx:{workload.typed} --epochs {epochs} vs "
        f"python bench/plain_keras.py {workload.typed} OUT --epochs {epochs}",
        {
            "ratio": statistics.median(ratios),
            "trainflow": statistics.median(times["trainflow"]),
            "plain": statistics.median(times["plain"]),
        },
    )


def overhead_at_scale(
    api_url: str, directory: Path, repeats: int, epochs: int, workload: Workload
) -> Row:
    """(1) at MNIST's size: the same comparison on a larger workload, where the fixed cost is a
    smaller share and the target tighter."""
    environment = {**os.environ, "PREFECT_API_URL": api_url}
    return _trainflow_against_plain(
        "against a running local server", environment, directory, repeats, epochs, 1.10, workload
    )


def overhead_only(
    repeats: int,
    epochs: int,
    synthetic_rows: int,
    synthetic_epochs: int,
    command: str,
    began: float,
) -> str:
    """The overhead rows alone (both servers, at MNIST's size) with the fixed costs that explain
    them, rendered as a report."""
    from app.stack.prefect_server import LocalServer
    from bench.breakdown import fixed_costs
    from bench.report import render
    from bench.tracking import tracking_cost

    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        with LocalServer(home=directory / "prefect-home") as server:
            rows = orchestration_overhead(server.api_url, directory, repeats, epochs)
            rows += fixed_costs(server.api_url, repeats)
            rows.append(tracking_cost(server.api_url, directory / "tracking", repeats, epochs))
            source = write_synthetic_source(directory / "idx", synthetic_rows)
            workload = Workload(
                source,
                f"synthetic ({synthetic_rows:,})",
                "<the synthetic IDX files bench.run writes>",
            )
            rows.append(
                overhead_at_scale(
                    server.api_url, directory / "scale", repeats, synthetic_epochs, workload
                )
            )
    return render(rows, command, time.monotonic() - began)
