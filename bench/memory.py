"""`./dev bench --only-memory`: what data at scale costs. Peak resident memory of whole runs on
growing synthetic data and on a folder of JPEGs, preparation's speed and memory, prepared bytes
on disk, and `fit`'s throughput on the streaming path against the in-memory one. Peak memory is
the child process's own (`wait4`'s `ru_maxrss`), never this process's."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.harness import (
    TRAINFLOW,
    Row,
    alternate,
    run_measuring_peak,
    spread,
    write_synthetic_source,
)

GIB = 2**30
CURVE_SIZES = (100_000, 300_000, 1_000_000)
JPEG_COUNT, JPEG_SIZE = 20_000, (180, 180)
STREAMING_BUDGET = "32MiB"  # several windows an epoch at 70,000 images: the streaming path's worst
PREPARE_IN_CHILD = """
import sys, time
from tasks.prepare_data import prepare_data
from trainflow.datasets import DataSource, PreparationSpec
from trainflow.paths import ArtifactPaths
began = time.monotonic()
prepare_data(DataSource.parse(sys.argv[1]), PreparationSpec(), ArtifactPaths.at(sys.argv[2]))
print(time.monotonic() - began)
"""


def peak_memory(arguments: list[str], environment: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a command to success; its peak resident bytes and its stdout."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as log:
        code, peak = run_measuring_peak(arguments, environment, out, log)
        if code:
            log.seek(0)
            raise RuntimeError(f"{arguments} failed ({code}): {log.read()[-2000:]}")
        out.seek(0)
        return peak, out.read()


def one_epoch_run(source: str, artifacts: Path, api_url: str) -> int:
    """Peak memory of a 1-epoch `trainflow run` of mlp (against a running server)."""
    arguments = [TRAINFLOW, "run", "--json", "--dataset", source, "--epochs", "1"]
    arguments += ["--artifacts", str(artifacts)]
    return peak_memory(arguments, {**os.environ, "PREFECT_API_URL": api_url})[0]


def memory_curve(api_url: str, directory: Path) -> tuple[list[Row], dict[int, int]]:
    """Peak memory of a 1-epoch run on 100,000, 300,000 and 1,000,000 synthetic 28x28 images."""
    peaks = {}
    for count in CURVE_SIZES:
        source = write_synthetic_source(directory / f"idx-{count}", count)
        peaks[count] = one_epoch_run(f"idx:{source}", directory / f"artifacts-{count}", api_url)
    largest, smallest = peaks[CURVE_SIZES[-1]], peaks[CURVE_SIZES[0]]
    curve = ", ".join(f"{count:,}: {peak / GIB:.2f} GiB" for count, peak in peaks.items())
    rows = [
        Row(
            "peak memory, 1-epoch `trainflow run` of mlp on synthetic 28x28 IDX",
            curve,
            "<= 2 GiB at 1,000,000",
            largest <= 2 * GIB,
            "trainflow run --dataset idx:<synthetic N> --epochs 1",
        ),
        Row(
            "peak memory growth, 100,000 to 1,000,000 images",
            f"{largest / smallest:.2f} x",
            "<= 1.5 x",
            largest / smallest <= 1.5,
            "the row above",
        ),
    ]
    return rows, peaks


def preparation_at_scale(directory: Path) -> list[Row]:
    """Preparing 1,000,000 synthetic images in a child: rows/s, peak memory, bytes on disk."""
    source = directory / f"idx-{CURVE_SIZES[-1]}"
    artifacts = directory / "prepared-1m"
    peak, out = peak_memory(
        [sys.executable, "-c", PREPARE_IN_CHILD, f"idx:{source}", str(artifacts)]
    )
    seconds = float(out.strip().splitlines()[-1])
    on_disk = sum(path.stat().st_size for path in (artifacts / "data").rglob("*.parquet"))
    pixels = CURVE_SIZES[-1] * 28 * 28
    return [
        Row(
            "preparation of 1,000,000 28x28 images (IDX, gzip)",
            f"{CURVE_SIZES[-1] / seconds:,.0f} rows/s; peak {peak / GIB:.2f} GiB",
            ">= 50,000 rows/s, <= 1 GiB",
            CURVE_SIZES[-1] / seconds >= 50_000 and peak <= GIB,
            "prepare_data(idx:<synthetic 1,000,000>) in a child process",
        ),
        Row(
            "prepared data on disk against the source's 8-bit pixels",
            f"{on_disk / pixels:.3f} x ({on_disk / 1e6:,.0f} MB for {pixels / 1e6:,.0f} MB)",
            "<= 1.1 x",
            on_disk / pixels <= 1.1,
            "the Parquet files of the row above",
        ),
    ]


def write_jpeg_folder(root: Path, count: int, size: tuple[int, int]) -> Path:
    """`count` JPEGs of `size` in two class folders: smooth random colour fields (upscaled noise,
    JPEG-sized like photographs, ~10 KB), the class in which channel is brighter."""
    from PIL import Image

    generator = np.random.default_rng(0)
    for index in range(count):
        label = index % 2
        folder = root / ("cats", "dogs")[label]
        folder.mkdir(parents=True, exist_ok=True)
        small = generator.integers(0, 200, size=(12, 12, 3), dtype=np.uint8)
        small[..., label] = np.minimum(255, small[..., label].astype(np.int32) + 55).astype(
            np.uint8
        )
        image = Image.fromarray(small, mode="RGB").resize(size[::-1], Image.Resampling.BILINEAR)
        image.save(folder / f"{index:05d}.jpg", quality=90)
    return root


def image_folder(api_url: str, directory: Path) -> list[Row]:
    """Preparing, then training one epoch on, 20,000 JPEGs of 180x180x3."""
    folder = write_jpeg_folder(directory / "jpegs", JPEG_COUNT, JPEG_SIZE)
    peak_prepare, out = peak_memory(
        [sys.executable, "-c", PREPARE_IN_CHILD, f"images:{folder}", str(directory / "jpeg-prep")]
    )
    rate = JPEG_COUNT / float(out.strip().splitlines()[-1])
    peak_run = one_epoch_run(f"images:{folder}", directory / "jpeg-run", api_url)
    return [
        Row(
            f"{JPEG_COUNT:,} JPEGs of 180x180x3: preparation (Pillow decoding), one process",
            f"{rate:,.0f} images/s; peak {peak_prepare / GIB:.2f} GiB",
            ">= 1,000 images/s",
            rate >= 1000,
            "prepare_data(images:<the JPEG folder bench.memory writes>) in a child process",
        ),
        Row(
            f"{JPEG_COUNT:,} JPEGs of 180x180x3: preparation and one epoch of mlp",
            f"peak {peak_run / GIB:.2f} GiB",
            "<= 2 GiB",
            peak_run <= 2 * GIB,
            "trainflow run --dataset images:<the JPEG folder> --epochs 1",
        ),
    ]


def streaming_throughput(directory: Path, repeats: int, epochs: int = 3) -> Row:
    """`fit`'s samples/s fed by the streaming path (at a small budget) and by the in-memory path,
    70,000 synthetic images, alternately."""
    import keras

    from tasks.prepare_data import prepare_data
    from trainflow.datasets import DataSource, PreparationSpec
    from trainflow.paths import ArtifactPaths
    from trainflow.sizes import parse_size
    from trainflow.training.inputs import training_input
    from trainflow.training.models import build_classifier
    from trainflow.training.pipeline import steps_per_epoch

    source = write_synthetic_source(directory / "idx-70k", 70_000)
    data = prepare_data(
        DataSource.parse(f"idx:{source}"), PreparationSpec(), ArtifactPaths.at(directory / "a70k")
    )
    rows = data.rows["train"]

    def fit(mode: str) -> float:
        keras.utils.set_random_seed(0)
        model, contract = build_classifier("mlp", data.image_shape, data.num_classes)
        inputs = training_input(data, contract, mode, parse_size(STREAMING_BUDGET))
        batches = inputs.training_batches(0, range(epochs), 32, 0)
        began = time.monotonic()
        model.fit(batches, steps_per_epoch=steps_per_epoch(rows, 32), epochs=epochs, verbose=0)
        return rows * epochs / (time.monotonic() - began)

    rates = alternate({"stream": lambda: fit("stream"), "memory": lambda: fit("memory")}, repeats)
    ratio = statistics.median(rates["stream"]) / statistics.median(rates["memory"])
    return Row(
        "input: samples/s of `fit`, streaming path vs in-memory path, 70,000 images",
        f"ratio {ratio:.3f}; stream {spread(rates['stream'], unit='samples/s', digits=0)}, "
        f"memory {spread(rates['memory'], unit='samples/s', digits=0)}",
        ">= 0.95",
        ratio >= 0.95,
        f"fit {epochs} epochs of mlp, --data-input stream --memory-budget {STREAMING_BUDGET} vs "
        "--data-input memory",
    )


def memory_only(repeats: int, command: str, began: float) -> str:
    """All of the above against one running server; returns the report, and draws the curve."""
    from app.stack.prefect_server import LocalServer
    from bench.report import render

    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        rows = [streaming_throughput(directory, repeats)]
        with LocalServer(home=directory / "prefect-home") as server:
            curve_rows, peaks = memory_curve(server.api_url, directory)
            rows += curve_rows
            rows += preparation_at_scale(directory)
            rows += image_folder(server.api_url, directory)
    draw_curve(peaks, Path(__file__).with_name("peak-memory.png"))
    return render(rows, command, time.monotonic() - began)


def draw_curve(peaks: dict[int, int], output: Path) -> None:
    """Peak memory against dataset size, with the pixels' own size for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(peaks)
    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.plot(sizes, [peaks[size] / GIB for size in sizes], "o-", label="peak RSS, 1-epoch run")
    axis.plot(sizes, [size * 784 / GIB for size in sizes], "s--", label="the 8-bit pixels")
    axis.axhline(2, color="grey", linestyle=":", label="target at 1,000,000: 2 GiB")
    axis.set_xlabel("images (28x28)")
    axis.set_ylabel("GiB")
    axis.set_xscale("log")
    axis.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=100)
