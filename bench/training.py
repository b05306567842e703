"""In-process training benchmarks on the MNIST test split: (2) checkpoint overhead and (5) input
pipeline throughput. TensorFlow is imported once; every measured `fit` trains a fresh model."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from bench.harness import MNIST_COMMAND_SOURCE, MNIST_SOURCE, Row, alternate, spread
from tasks.prepare_data import prepare_data
from trainflow.checkpoints.state import ResumeState
from trainflow.checkpoints.writer import CheckpointWriter
from trainflow.data.prepared import read_split
from trainflow.datasets import DataSource, PreparationSpec
from trainflow.paths import ArtifactPaths, RunPaths
from trainflow.results import PreparedData
from trainflow.training.callbacks.checkpointing import checkpoint_callbacks
from trainflow.training.models import build_model
from trainflow.training.pipeline import steps_per_epoch, training_batches

SEED = 42
BATCH_SIZE = 32
STEP_CHECKPOINT_INTERVAL = 100
NO_EARLY_STOP = 1000  # patience: every side trains all its epochs


def _fresh_model(data: PreparedData) -> keras.Model:
    keras.backend.clear_session()
    keras.utils.set_random_seed(SEED)
    return build_model("mlp", data.image_shape, data.num_classes)


def _checkpoint_callbacks(
    model: keras.Model, data: PreparedData, directory: Path, every: int | None
) -> tuple[list[keras.callbacks.Callback], CheckpointWriter]:
    """What `trainflow run` checkpoints with (its own `checkpoint_callbacks`), for a run under
    `directory`, and their checkpoint writer."""
    paths = RunPaths(run_dir=directory)
    paths.best_checkpoints_dir.mkdir(parents=True)
    state = ResumeState(
        model_kind="mlp", data_fingerprint=data.fingerprint, seed=SEED, batch_size=BATCH_SIZE
    )
    layout_model = build_model("mlp", data.image_shape, data.num_classes)
    writer = CheckpointWriter(model, layout_model, paths, keep=2)
    return [*checkpoint_callbacks(paths, state, writer, NO_EARLY_STOP, every)], writer


def checkpoint_overhead(
    data: PreparedData, label: str, repeats: int, epochs: int, store: str | None = None
) -> list[Row]:
    """(2) Seconds of `fit` with trainflow's checkpoints every epoch, and also every
    `STEP_CHECKPOINT_INTERVAL` steps, against no checkpoints (early stopping only); into a local
    temporary directory, or with `store` (an artifacts URL) into that object store."""
    images, labels = read_split(data.paths.split("train"))
    validation = read_split(data.paths.split("validation"))
    runs = iter(range(1_000_000))

    def fit_seconds(every: int | None, checkpoints: bool) -> float:
        model = _fresh_model(data)
        with tempfile.TemporaryDirectory() as directory:
            run_dir = Path(directory)
            if store is not None:
                run_dir = ArtifactPaths.at(store).run(f"bench-{next(runs)}").run_dir
            writer = None
            callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=NO_EARLY_STOP)]
            if checkpoints:
                callbacks, writer = _checkpoint_callbacks(model, data, run_dir, every)
            batches = training_batches(images, labels, SEED, range(epochs), BATCH_SIZE)
            began = time.monotonic()
            model.fit(
                batches,
                steps_per_epoch=steps_per_epoch(len(labels), BATCH_SIZE),
                epochs=epochs,
                validation_data=validation,
                shuffle=False,
                callbacks=callbacks,
                verbose=0,
            )
            if writer is not None:
                writer.close()  # the last checkpoint on disk is part of the cost
            return time.monotonic() - began

    times = alternate(
        {
            "none": lambda: fit_seconds(None, checkpoints=False),
            "epoch": lambda: fit_seconds(None, checkpoints=True),
            "steps": lambda: fit_seconds(STEP_CHECKPOINT_INTERVAL, checkpoints=True),
        },
        repeats,
    )
    baseline = statistics.median(times["none"])
    command = f"./dev bench (bench/training.py: fit {epochs} epochs of mlp on {label})"
    where = "" if store is None else ", into the local S3 server"
    rows = []
    for side, every_label, limit in (
        ("epoch", "every epoch", 2.0),
        ("steps", f"every {STEP_CHECKPOINT_INTERVAL} steps (and every epoch)", 5.0),
    ):
        overhead = 100 * (statistics.median(times[side]) / baseline - 1)
        rows.append(
            Row(
                f"checkpoint overhead, {every_label}, {label}{where}",
                f"{overhead:+.1f}%: {spread(times[side])} vs none {spread(times['none'])}",
                f"<= {limit:g}%",
                overhead <= limit,
                command,
                {
                    "percent": overhead,
                    "epoch_seconds": baseline / epochs,
                    "fastest": min(times[side]),
                    "slowest": max(times[side]),
                },
            )
        )
    return rows


def input_pipeline(
    data: PreparedData, arrays: tuple[np.ndarray, np.ndarray], repeats: int, epochs: int
) -> list[Row]:
    """(5) Training samples/s feeding from our prepared Parquet split (read included) through
    `training_batches`, against `fit` on in-memory NumPy arrays with Keras's own shuffling."""
    numpy_images, numpy_labels = arrays
    validation = read_split(data.paths.split("validation"))
    rows_trained = data.rows["train"] * epochs

    def parquet_side() -> float:
        model = _fresh_model(data)
        began = time.monotonic()
        images, labels = read_split(data.paths.split("train"))
        model.fit(
            training_batches(images, labels, SEED, range(epochs), BATCH_SIZE),
            steps_per_epoch=steps_per_epoch(len(labels), BATCH_SIZE),
            epochs=epochs,
            validation_data=validation,
            shuffle=False,
            verbose=0,
        )
        return rows_trained / (time.monotonic() - began)

    def numpy_side() -> float:
        model = _fresh_model(data)
        began = time.monotonic()
        model.fit(
            numpy_images,
            numpy_labels,
            batch_size=BATCH_SIZE,
            epochs=epochs,
            validation_data=validation,
            shuffle=True,
            verbose=0,
        )
        return rows_trained / (time.monotonic() - began)

    rates = alternate({"parquet": parquet_side, "numpy": numpy_side}, repeats)
    ratio = statistics.median(rates["parquet"]) / statistics.median(rates["numpy"])
    return [
        Row(
            "input pipeline: samples/s from prepared Parquet vs in-memory NumPy",
            f"ratio {ratio:.3f}; Parquet {spread(rates['parquet'], unit='samples/s', digits=0)}, "
            f"NumPy {spread(rates['numpy'], unit='samples/s', digits=0)}",
            ">= 0.95",
            ratio >= 0.95,
            f"./dev bench (bench/training.py: {epochs} epochs of mlp on {MNIST_COMMAND_SOURCE})",
        )
    ]


def checkpoint_rows(
    source: str, label: str, repeats: int, epochs: int, directory: Path, store: str | None = None
) -> list[Row]:
    """Row (2) on `source`, prepared under `directory`; checkpoints into `store` if given."""
    data = prepare_data(DataSource.parse(source), PreparationSpec(), ArtifactPaths.at(directory))
    return checkpoint_overhead(data, label, repeats, epochs, store)


def input_pipeline_rows(repeats: int, epochs: int, directory: Path) -> list[Row]:
    """Row (5) on the MNIST test split, prepared under `directory`."""
    data = prepare_data(
        DataSource.parse(MNIST_SOURCE), PreparationSpec(), ArtifactPaths.at(directory)
    )
    arrays = read_split(data.paths.split("train"))  # the NumPy side: the same examples, in memory
    return input_pipeline(data, arrays, repeats, epochs)
