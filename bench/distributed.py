"""Data-parallel training on this machine (issue 21): training steps per second of one process,
of `--distribute mirrored` over two logical CPU devices and of `--workers 2`; the per-step cost of
our distributed step (`ReplicatedFit`) against Keras's `fit` in one process; and what resume
checkpoints every 10 steps cost a group of two workers.

Steps per second are read from the run's own record, between the end of its first epoch and the
end of its last (`training.json`'s `epoch_ends_ms`), so they leave out start-up, TensorFlow's
import in each worker, tracing, and the stages after training: the steady pace of training,
validation after each epoch included."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.harness import MNIST_COMMAND_SOURCE, MNIST_SOURCE, TRAINFLOW, Row, alternate, spread

MODES = {
    "one process": [],
    "mirrored, 2 logical CPUs": ["--distribute", "mirrored"],
    "2 workers": ["--workers", "2"],
}
CHECKPOINT_EVERY = 10


def steps_per_second(run_dir: Path) -> float:
    """Training steps per second between the first epoch's end and the last's."""
    training = json.loads((run_dir / "training.json").read_text())
    ends = training["epoch_ends_ms"]
    return (len(ends) - 1) * training["steps_per_epoch"] / ((ends[-1] - ends[0]) / 1000)


def _trainer(api_url: str, directory: Path, epochs: int):
    environment = {**os.environ, "PREFECT_API_URL": api_url}
    numbers = iter(range(1_000_000))

    def train(*options: str) -> float:
        name = f"bench-{next(numbers)}"
        arguments = [TRAINFLOW, "run", "--dataset", MNIST_SOURCE, "--epochs", str(epochs)]
        arguments += ["--artifacts", str(directory), "--run-name", name, *options]
        subprocess.run(arguments, check=True, env=environment, capture_output=True)
        return steps_per_second(directory / "runs" / name)

    return train


def scaling_rows(api_url: str, directory: Path, repeats: int, epochs: int) -> list[Row]:
    """Steps/s of each mode, alternately; the efficiency of each against one process."""
    train = _trainer(api_url, directory, epochs)
    paces = alternate(
        {mode: (lambda options=options: train(*options)) for mode, options in MODES.items()},
        repeats,
    )
    single = statistics.median(paces["one process"])
    command = f"trainflow run --dataset {MNIST_COMMAND_SOURCE} --epochs {epochs} [OPTIONS]"
    rows = []
    for mode, options in MODES.items():
        pace = statistics.median(paces[mode])
        replicas = 1 if not options else 2
        efficiency = pace / (replicas * single)
        rows.append(
            Row(
                f"training steps/s (global batch 32), mlp on MNIST test split: {mode}",
                f"{spread(paces[mode], 'steps/s', 1)}; {pace / single:.2f} x one process, "
                f"scaling efficiency {efficiency:.0%}",
                "(reported: no speed-up on 2 cores)",
                None,
                f"{command} {' '.join(options)}".strip(),
                {"steps_per_second": pace, "speedup": pace / single},
            )
        )
    every = alternate(
        {
            "without": lambda: train("--workers", "2"),
            "with": lambda: train("--workers", "2", "--checkpoint-every", str(CHECKPOINT_EVERY)),
        },
        repeats,
    )
    cost = 1 - statistics.median(every["with"]) / statistics.median(every["without"])
    rows.append(
        Row(
            f"checkpoint overhead under MultiWorkerMirroredStrategy, 2 workers, every "
            f"{CHECKPOINT_EVERY} steps",
            f"{cost:.1%} fewer steps/s: {spread(every['with'], 'steps/s', 1)} with, "
            f"{spread(every['without'], 'steps/s', 1)} without",
            "(reported)",
            None,
            f"{command} --workers 2 --checkpoint-every {CHECKPOINT_EVERY} vs without",
            {"checkpoint_cost": cost},
        )
    )
    return rows


def step_cost_row(repeats: int, steps: int = 300) -> Row:
    """Milliseconds a training step of mlp takes in one process: `fit` against our step."""
    import keras
    import numpy as np
    import tensorflow as tf

    from trainflow.contract import ModelContract
    from trainflow.training.distributed.loop import ReplicatedFit
    from trainflow.training.distributed.placement import Placement
    from trainflow.training.models import build_classifier

    images = np.random.default_rng(0).random((32 * steps, 28, 28), dtype=np.float32)
    labels = np.arange(32 * steps) % 10
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32).cache()
    validation = batches.take(1)

    def timed(train) -> float:
        keras.utils.set_random_seed(0)
        model, _ = build_classifier("mlp", (28, 28), 10)
        train(model, 1, 2)  # traced and warmed up on the first epoch of two
        began = time.perf_counter()
        train(model, 2, 2)
        return (time.perf_counter() - began) / steps * 1000

    def by_fit(model, first: int, last: int) -> None:
        model.fit(
            batches, epochs=last, initial_epoch=first - 1, validation_data=validation, verbose=0
        )

    def by_step(model, first: int, last: int) -> None:
        loop = ReplicatedFit(model, Placement(tf.distribute.get_strategy()), ModelContract())
        loop.fit(batches.repeat(), steps, last, first - 1, validation, [])

    times = alternate({"fit": lambda: timed(by_fit), "step": lambda: timed(by_step)}, repeats)
    fit, step = statistics.median(times["fit"]), statistics.median(times["step"])
    return Row(
        "per-step cost of the distributed step against Keras fit, one process, mlp, batch 32",
        f"{step / fit:.2f} x: our step {spread(times['step'], 'ms', 2)}, fit "
        f"{spread(times['fit'], 'ms', 2)}",
        "(reported)",
        None,
        "ReplicatedFit(model, Placement(default strategy)).fit vs model.fit, 300 steps",
        {"step_ratio": step / fit},
    )


def distributed_only(repeats: int, epochs: int, command: str, began: float) -> str:
    """The distributed rows alone, rendered as a report."""
    from app.stack.prefect_server import LocalServer
    from bench.report import render

    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        with LocalServer(home=directory / "prefect-home") as server:
            rows = scaling_rows(server.api_url, directory / "artifacts", repeats, epochs)
    rows.append(step_cost_row(repeats))
    return render(rows, command, time.monotonic() - began)
