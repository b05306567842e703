"""Side-by-side benchmarks of trainflow against plain Keras; writes BENCHMARKS.md.

Each comparison runs its sides alternately (A B, B A, A B, ...) for `--repeats` rounds and reports
the median and the min-max. Real data: the MNIST test split in ../shared/data/mnist-t10k; where size
matters, a synthetic MNIST-sized set (70,000 images) generated deterministically.

    ./dev bench               # all comparisons, BENCHMARKS.md rewritten
    ./dev bench --repeats 1   # a quick pass (the smoke test runs this on tiny data)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_TEST_SPLIT = REPO_ROOT.parent / "shared" / "data" / "mnist-t10k"
TRAINFLOW = str(Path(sys.executable).with_name("trainflow"))


@dataclass
class Row:
    """One line of the results table."""

    measure: str
    value: str
    target: str
    met: bool | None
    command: str


def alternate(sides: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every side `repeats` times, alternating the order each round; each side returns seconds."""
    results: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            results[name].append(sides[name]())
    return results


def spread(values: list[float], unit: str = "s", digits: int = 2) -> str:
    """Median and min-max, e.g. `0.12 s (0.11-0.14)`."""
    return (
        f"{statistics.median(values):.{digits}f} {unit} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def wall_time(arguments: list[str], environment: dict[str, str] | None = None) -> float:
    began = time.monotonic()
    subprocess.run(
        arguments, check=True, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.monotonic() - began


def startup(repeats: int) -> list[Row]:
    """(6) `--help` must answer without importing TensorFlow."""
    times = alternate(
        {
            "trainflow --help": lambda: wall_time([TRAINFLOW, "--help"]),
            "trainflow run --help": lambda: wall_time([TRAINFLOW, "run", "--help"]),
        },
        repeats,
    )
    return [
        Row(
            f"startup: `{name}`",
            spread(values),
            "<= 1 s",
            statistics.median(values) <= 1.0,
            f"{name}",
        )
        for name, values in times.items()
    ]


def data_preparation(
    repeats: int, source: str, label: str, source_bytes: int, rows: int, command: str
) -> list[Row]:
    """(4) Raw source to validated Parquet: rows/s and MB/s; the cached second run's time."""
    from tasks.prepare_data import prepare_data
    from trainflow.config import DataSource, SplitSpec
    from trainflow.paths import ArtifactPaths

    first, cached = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as directory:
            artifacts = ArtifactPaths.at(Path(directory))
            for times in (first, cached):
                began = time.monotonic()
                prepare_data(DataSource.parse(source), SplitSpec(), artifacts)
                times.append(time.monotonic() - began)
    median = statistics.median(first)
    return [
        Row(
            f"data preparation, {label}: first run",
            spread(first)
            + f"; {rows / median:,.0f} rows/s, {source_bytes / median / 1e6:.1f} MB/s",
            "(reported)",
            None,
            command,
        ),
        Row(
            f"data preparation, {label}: cached second run",
            spread(cached, digits=3),
            "<= 1 s",
            statistics.median(cached) <= 1.0,
            f"{command}, twice",
        ),
    ]


def orchestration_overhead(repeats: int, epochs: int) -> list[Row]:
    """(1) `trainflow run` vs the plain Keras script doing the same work, wall time ratio, against
    a running local Prefect server and with the server `trainflow run` starts for itself."""
    from trainflow.prefect_server import LocalServer

    source = f"idx:{MNIST_TEST_SPLIT}"
    rows = []
    run_numbers = iter(range(1_000_000))  # a new run each time: a finished run does not train again
    with (
        tempfile.TemporaryDirectory() as directory,
        LocalServer(home=Path(directory) / "home") as server,
    ):
        environments = {
            "against a running local server": {**os.environ, "PREFECT_API_URL": server.api_url},
            "with its own temporary server": {
                key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"
            },
        }
        for mode, environment in environments.items():
            trainflow = [
                TRAINFLOW,
                "run",
                "--dataset",
                source,
                "--epochs",
                str(epochs),
                "--artifacts",
                str(Path(directory) / "artifacts"),
            ]
            plain = [
                sys.executable,
                str(REPO_ROOT / "bench" / "plain_keras.py"),
                str(MNIST_TEST_SPLIT),
                str(Path(directory) / "plain"),
                "--epochs",
                str(epochs),
            ]
            times = alternate(
                {
                    "trainflow": lambda: wall_time(
                        [*trainflow, "--run-name", f"bench-{next(run_numbers)}"], environment
                    ),
                    "plain": lambda: wall_time(plain, environment),
                },
                repeats,
            )
            ratios = [ours / theirs for ours, theirs in zip(times["trainflow"], times["plain"])]
            rows.append(
                Row(
                    f"orchestration overhead, {epochs} epochs of mlp on MNIST test split, {mode}",
                    f"ratio {spread(ratios, unit='x')}; trainflow {spread(times['trainflow'])}, "
                    f"plain Keras {spread(times['plain'])}",
                    "<= 1.10" if "running" in mode else "(reported)",
                    statistics.median(ratios) <= 1.10 if "running" in mode else None,
                    f"trainflow run --dataset idx:../shared/data/mnist-t10k --epochs {epochs} vs "
                    f"python bench/plain_keras.py ../shared/data/mnist-t10k OUT --epochs {epochs}",
                )
            )
    return rows


def write_synthetic_source(directory: Path, count: int) -> Path:
    """A deterministic MNIST-sized IDX source (`count` images)."""
    import gzip
    import struct

    import numpy as np

    generator = np.random.default_rng(0)
    labels = (np.arange(count) % 10).astype(np.uint8)
    images = generator.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in (
        ("t10k-images-idx3-ubyte.gz", images),
        ("t10k-labels-idx1-ubyte.gz", labels),
    ):
        header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        with gzip.open(directory / name, "wb", compresslevel=1) as stream:
            stream.write(header + array.tobytes())
    return directory


def render(rows: list[Row], command: str) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine} ({platform.platform()}),",
        f"with `{command}`. Median over the repetitions, min-max in brackets.",
        "",
        "| measure | result | target | met | reproduce |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.measure} | {row.value} | {row.target} | {met} | `{row.command}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--synthetic-rows", type=int, default=70_000)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the overhead comparison")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    rows = startup(args.repeats)
    if (MNIST_TEST_SPLIT / "t10k-images-idx3-ubyte.gz").is_file():
        size = sum(path.stat().st_size for path in MNIST_TEST_SPLIT.glob("*.gz"))
        rows += data_preparation(
            args.repeats,
            f"idx:{MNIST_TEST_SPLIT}",
            "MNIST test split (10,000)",
            size,
            10_000,
            "prepare_data(idx:../shared/data/mnist-t10k)",
        )
        rows += orchestration_overhead(args.repeats, args.epochs)
    with tempfile.TemporaryDirectory() as directory:
        source = write_synthetic_source(Path(directory) / "idx", args.synthetic_rows)
        size = sum(path.stat().st_size for path in source.iterdir())
        rows += data_preparation(
            args.repeats,
            f"idx:{source}",
            f"synthetic ({args.synthetic_rows:,})",
            size,
            args.synthetic_rows,
            "prepare_data(idx:<the synthetic IDX files bench.run writes>)",
        )
    command = "./dev bench " + " ".join(argv if argv is not None else sys.argv[1:])
    args.output.write_text(render(rows, command.strip()))
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
