"""What every benchmark shares: a table row, alternating repetitions, and timing helpers."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_TEST_SPLIT = REPO_ROOT.parent / "shared" / "data" / "mnist-t10k"
MNIST_SOURCE = f"idx:{MNIST_TEST_SPLIT}"
MNIST_COMMAND_SOURCE = "idx:../shared/data/mnist-t10k"  # as a reader types it from the repository
TRAINFLOW = str(Path(sys.executable).with_name("trainflow"))


@dataclass
class Row:
    """One line of the results table; `met` is None for a figure without a target. `figures` are
    the medians the row measured, by name, for the prose below the table (bench/report.py)."""

    measure: str
    value: str
    target: str
    met: bool | None
    command: str
    figures: dict[str, float] = field(default_factory=dict)


def reported(measure: str, values: list[float], command: str, digits: int = 2) -> Row:
    """A row of seconds without a target; its median is the figure `seconds`."""
    return Row(
        measure,
        spread(values, digits=digits),
        "(reported)",
        None,
        command,
        {"seconds": statistics.median(values)},
    )


def alternate(sides: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every side `repeats` times, alternating the order each round; each side returns a number."""
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


# Runs a command and prints its exit code and its peak resident bytes. A fresh, small process must
# start the command: Linux carries the peak RSS of a process's old address space over `exec`, and
# a child forked (or vforked) straight from a large process (pytest, a benchmark holding data)
# would report that process's peak as its own.
PEAK_RSS_LAUNCHER = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(process.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024, file=sys.stderr)
"""


def run_measuring_peak(
    arguments: list[str], environment: dict[str, str] | None, stdout, stderr
) -> tuple[int, int]:
    """Run a command to its end, its output into the open files `stdout` and `stderr`; its exit
    code and its peak resident memory in bytes (the kernel's own accounting of that process)."""
    completed = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_LAUNCHER, *arguments],
        env=environment,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    *output, last = completed.stderr.rstrip("\n").split("\n")
    stderr.write("\n".join(output))
    code, peak = last.split()
    return int(code), int(peak)


def wall_time(arguments: list[str], environment: dict[str, str] | None = None) -> float:
    """Seconds for a command to run to completion (it must succeed)."""
    began = time.monotonic()
    subprocess.run(
        arguments, check=True, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.monotonic() - began


def timed(function: Callable[[], object]) -> float:
    """Seconds for one call of `function`."""
    began = time.monotonic()
    function()
    return time.monotonic() - began


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
