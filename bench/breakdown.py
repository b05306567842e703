"""(1) The fixed costs inside a `trainflow run`, measured one by one."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import MNIST_SOURCE, REPO_ROOT, Row, reported, timed, wall_time

PYTHON = sys.executable
PREFECT_IMPORT = "fixed cost: Prefect import"
PREFECT_ORCHESTRATION = (
    "fixed cost: Prefect orchestration of the flow's 8 task runs (flow run with no-op tasks, "
    "running server)"
)


def _samples(function, repeats: int) -> list[float]:
    """`function()` `repeats` times: the samples of a figure."""
    return [function() for _ in range(repeats)]


def _noop_flow_seconds(api_url: str) -> float:
    completed = subprocess.run(
        [PYTHON, "-m", "bench.noop_flow"],
        cwd=REPO_ROOT,
        env={**os.environ, "PREFECT_API_URL": api_url},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.splitlines()[-1])["seconds"]


def fixed_costs(api_url: str, repeats: int) -> list[Row]:
    """Interpreter start, TensorFlow import, Prefect import, Prefect server start, Prefect's cost
    for the flow's eight task runs, Parquet reads of the three splits, one resume checkpoint."""
    from app.stack.prefect_server import LocalServer
    from tasks.prepare_data import prepare_data
    from trainflow.checkpoints.state import ResumeState
    from trainflow.checkpoints.writer import CheckpointWriter
    from trainflow.data.prepared import read_split
    from trainflow.datasets import DataSource, PreparationSpec
    from trainflow.paths import ArtifactPaths
    from trainflow.training.models import build_model

    python_start = _samples(lambda: wall_time([PYTHON, "-c", "pass"]), repeats)
    baseline = statistics.median(python_start)
    tensorflow = _samples(
        lambda: wall_time([PYTHON, "-c", "import tensorflow"]) - baseline, repeats
    )
    prefect = _samples(
        lambda: wall_time([PYTHON, "-c", "from prefect import flow, task"]) - baseline, repeats
    )

    def server_start() -> float:
        with tempfile.TemporaryDirectory() as home:
            server = LocalServer(home=Path(home))
            seconds = timed(lambda: server.start().wait_until_healthy())
            server.stop()
            return seconds

    servers = _samples(server_start, repeats)
    orchestration = _samples(lambda: _noop_flow_seconds(api_url), repeats)
    with tempfile.TemporaryDirectory() as directory:
        data = prepare_data(
            DataSource.parse(MNIST_SOURCE), PreparationSpec(), ArtifactPaths.at(Path(directory))
        )
        parquet = _samples(
            lambda: timed(
                lambda: [
                    read_split(data.paths.split(name)) for name in ("train", "validation", "test")
                ]
            ),
            repeats,
        )
        model = build_model("mlp", data.image_shape, data.num_classes)
        shadow = build_model("mlp", data.image_shape, data.num_classes)
        paths = ArtifactPaths.at(directory).run("breakdown")
        writer = CheckpointWriter(model, shadow, paths, keep=2)
        state = ResumeState(model_kind="mlp", data_fingerprint="", seed=0, batch_size=32)
        steps = iter(range(1, 1_000_000))

        def one_checkpoint() -> None:
            writer.commit(state.model_copy(update={"global_step": next(steps)}))
            writer.flush()

        checkpoint = _samples(lambda: timed(one_checkpoint), max(repeats, 10))
        writer.close()
    return [
        reported("fixed cost: Python interpreter start", python_start, "python -c pass"),
        reported(
            "fixed cost: TensorFlow import",
            tensorflow,
            "python -c 'import tensorflow' minus the interpreter start",
        ),
        reported(
            PREFECT_IMPORT,
            prefect,
            "python -c 'from prefect import flow, task' minus the interpreter start",
        ),
        reported(
            "fixed cost: Prefect server start (the one `trainflow run` starts without "
            "PREFECT_API_URL)",
            servers,
            "LocalServer().start().wait_until_healthy()",
        ),
        reported(
            PREFECT_ORCHESTRATION,
            orchestration,
            "python -m bench.noop_flow",
        ),
        reported(
            "fixed cost: Parquet reads of the three prepared splits (10,000 images)",
            parquet,
            "read_split(train, validation, test)",
            digits=3,
        ),
        reported(
            "fixed cost: one resume checkpoint of mlp (weights + optimizer, fsynced, manifest), "
            "start to on disk",
            checkpoint,
            "CheckpointWriter.commit + flush",
            digits=3,
        ),
    ]
