"""Side-by-side benchmarks of trainflow against plain Keras; writes BENCHMARKS.md.

Each comparison runs its sides alternately (A B, B A, A B, ...) for `--repeats` rounds and reports
the median and the min-max. Real data: the MNIST test split in ../shared/data/mnist-t10k; where size
matters, a synthetic MNIST-sized set (70,000 images) generated deterministically.

    ./dev bench               # all measures, BENCHMARKS.md rewritten (about 25 minutes)
    ./dev bench --repeats 1   # a quick pass (the smoke test runs it on tiny settings)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import (
    MNIST_COMMAND_SOURCE,
    MNIST_SOURCE,
    MNIST_TEST_SPLIT,
    REPO_ROOT,
    TRAINFLOW,
    Row,
    alternate,
    spread,
    wall_time,
    write_synthetic_source,
)
from bench.overhead import Workload, orchestration_overhead, overhead_at_scale

# Epochs of the distributed runs (fewer with fewer --epochs, never below 2: their pace is measured
# between the first epoch's end and the last).
DISTRIBUTED_EPOCHS = 4


def distributed_epochs(epochs: int) -> int:
    return max(2, min(epochs, DISTRIBUTED_EPOCHS))


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
        Row(f"startup: `{name}`", spread(values), "<= 1 s", statistics.median(values) <= 1.0, name)
        for name, values in times.items()
    ]


def data_preparation(
    repeats: int, source: str, label: str, source_bytes: int, rows: int, command: str
) -> list[Row]:
    """(4) Raw source to validated Parquet: rows/s and MB/s; the cached second run's time."""
    from tasks.prepare_data import prepare_data
    from trainflow.datasets import DataSource, PreparationSpec
    from trainflow.paths import ArtifactPaths

    first, cached = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as directory:
            artifacts = ArtifactPaths.at(Path(directory))
            for times in (first, cached):
                began = time.monotonic()
                prepare_data(DataSource.parse(source), PreparationSpec(), artifacts)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--synthetic-rows", type=int, default=70_000)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the overhead comparison")
    parser.add_argument(
        "--synthetic-epochs", type=int, default=3, help="epochs of training on the synthetic set"
    )
    parser.add_argument("--output", type=Path, default=None, help="default: BENCHMARKS.md")
    parser.add_argument(
        "--only-store",
        action="store_true",
        help="only the rows of artifacts in a store and their local counterparts, measured in "
        "the same run (written to bench-store.md unless --output)",
    )
    parser.add_argument(
        "--only-memory",
        action="store_true",
        help="only the rows of data at scale: peak memory, preparation, streaming (written to "
        "bench-memory.md unless --output)",
    )
    parser.add_argument(
        "--only-overhead",
        action="store_true",
        help="only the orchestration overhead rows and the fixed costs that explain them "
        "(written to bench-overhead.md unless --output)",
    )
    parser.add_argument(
        "--only-distributed",
        action="store_true",
        help="only the rows of data-parallel training: steps/s of one process, mirrored and 2 "
        "workers, the step's cost, checkpoints (written to bench-distributed.md unless --output)",
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    command = ("./dev bench " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    if args.only_store:
        from bench.store import store_only

        report = store_only(args.repeats, args.epochs, command, began)
        return _write(args.output or REPO_ROOT / "bench-store.md", report)
    if args.only_overhead:
        from bench.overhead import overhead_only

        report = overhead_only(
            args.repeats, args.epochs, args.synthetic_rows, args.synthetic_epochs, command, began
        )
        return _write(args.output or REPO_ROOT / "bench-overhead.md", report)
    if args.only_distributed:
        from bench.distributed import distributed_only

        report = distributed_only(args.repeats, distributed_epochs(args.epochs), command, began)
        return _write(args.output or REPO_ROOT / "bench-distributed.md", report)
    if args.only_memory:
        from bench.memory import memory_only

        report = memory_only(args.repeats, command, began)
        return _write(args.output or REPO_ROOT / "bench-memory.md", report)
    from app.stack.prefect_server import LocalServer
    from bench.breakdown import fixed_costs
    from bench.distributed import scaling_rows, step_cost_row
    from bench.recovery import recovery_cost
    from bench.report import render
    from bench.store import store_rows
    from bench.tracking import tracking_cost
    from bench.training import checkpoint_rows, input_pipeline_rows

    rows = startup(args.repeats)
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        if (MNIST_TEST_SPLIT / "t10k-images-idx3-ubyte.gz").is_file():
            size = sum(path.stat().st_size for path in MNIST_TEST_SPLIT.glob("*.gz"))
            rows += data_preparation(
                args.repeats,
                MNIST_SOURCE,
                "MNIST test split (10,000)",
                size,
                10_000,
                f"prepare_data({MNIST_COMMAND_SOURCE})",
            )
            with LocalServer(home=directory / "prefect-home") as server:
                rows += orchestration_overhead(server.api_url, directory, args.repeats, args.epochs)
                rows += fixed_costs(server.api_url, args.repeats)
                rows.append(
                    tracking_cost(server.api_url, directory / "tracking", args.repeats, args.epochs)
                )
                rows += recovery_cost(
                    server.api_url, directory, args.repeats, epochs=3, every=50, kill_step=330
                )
                rows += store_rows(server.api_url, directory / "store", args.repeats, args.epochs)
                rows += scaling_rows(
                    server.api_url,
                    directory / "distributed",
                    args.repeats,
                    distributed_epochs(args.epochs),
                )
            rows.append(step_cost_row(args.repeats))
            rows += checkpoint_rows(
                MNIST_SOURCE, "MNIST test split", args.repeats, args.epochs, directory / "mnist"
            )
            rows += input_pipeline_rows(args.repeats, args.epochs, directory / "pipeline")
        source = write_synthetic_source(directory / "idx", args.synthetic_rows)
        size = sum(path.stat().st_size for path in source.iterdir())
        label = f"synthetic ({args.synthetic_rows:,})"
        rows += data_preparation(
            args.repeats,
            f"idx:{source}",
            label,
            size,
            args.synthetic_rows,
            "prepare_data(idx:<the synthetic IDX files bench.run writes>)",
        )
        rows += checkpoint_rows(
            f"idx:{source}", label, args.repeats, args.synthetic_epochs, directory / "synthetic"
        )
        workload = Workload(source, label, "<the synthetic IDX files bench.run writes>")
        with LocalServer(home=directory / "prefect-home-scale") as server:
            rows.append(
                overhead_at_scale(
                    server.api_url,
                    directory / "scale",
                    args.repeats,
                    args.synthetic_epochs,
                    workload,
                )
            )
    report = render(rows, command, time.monotonic() - began)
    return _write(args.output or REPO_ROOT / "BENCHMARKS.md", report)


def _write(output: Path, report: str) -> int:
    output.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
