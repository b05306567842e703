"""BENCHMARKS.md from the rows of one benchmark run: the table, what the figures mean
(bench/EXPLANATIONS.md, which holds no figures), and why each missed target was missed, written
from the figures this run measured."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime

from bench.breakdown import PREFECT_IMPORT, PREFECT_ORCHESTRATION
from bench.harness import REPO_ROOT, Row

ORCHESTRATION = "orchestration overhead"
CHECKPOINTS = "checkpoint overhead"
INPUT_PIPELINE = "input pipeline"
STORE_RECOVERY = "recovery from the store"
LOCAL_RESTART = "recovery: restart to the first resumed step done"
# A side whose slowest sample is this many times its fastest had runs that stalled.
STALLED = 1.3


def render(rows: list[Row], command: str, seconds: float) -> str:
    """The whole of BENCHMARKS.md."""
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    header = (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit {measured_commit()} on "
        f"{machine} ({platform.platform()}), with `{command}` ({seconds / 60:.1f} minutes). Median "
        "over the repetitions, min-max in brackets; what the figures mean and why a target is "
        "missed: below the table."
    )
    lines = [
        "# Benchmarks",
        "",
        header,
        "",
        "| measure | result | target | met | reproduce |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.measure} | {row.value} | {row.target} | {met} | `{row.command}` |")
    explanations = (REPO_ROOT / "bench" / "EXPLANATIONS.md").read_text()
    return "\n".join([*lines, "", explanations.rstrip(), "", *missed_targets(rows)]) + "\n"


def measured_commit() -> str:
    """The commit the code was at, marked when tracked files had changes."""

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *arguments], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "(not a git checkout)"
    return f"{commit} with uncommitted changes" if changed else commit


def missed_targets(rows: list[Row]) -> list[str]:
    """The section on missed targets, each explained with this run's figures."""
    missed = [row for row in rows if row.met is False]
    if not missed:
        return ["## Targets missed", "", "None: every target was met in this run."]
    lines = ["## Targets missed, and why", ""]
    for row in missed:
        explain = next(
            (explain for prefix, explain in EXPLAINERS.items() if row.measure.startswith(prefix)),
            _unexplained,
        )
        lines.append(f"- **{row.measure}** (target {row.target}): {explain(row, rows)}")
    return lines


def _figure(rows: list[Row], measure: str, name: str) -> float | None:
    return next((row.figures[name] for row in rows if row.measure == measure), None)


def _orchestration(row: Row, rows: list[Row]) -> str:
    ours, plain = row.figures["trainflow"], row.figures["plain"]
    text = (
        f"ratio {row.figures['ratio']:.2f}: trainflow took {ours:.2f} s and the plain script "
        f"{plain:.2f} s, {ours - plain:.1f} s more, a cost that does not grow with the data. "
    )
    prefect_import = _figure(rows, PREFECT_IMPORT, "seconds")
    orchestration = _figure(rows, PREFECT_ORCHESTRATION, "seconds")
    if prefect_import is not None and orchestration is not None:
        rest = ours - plain - prefect_import - orchestration
        text += (
            f"Prefect accounts for {prefect_import + orchestration:.1f} s of it: importing it "
            f"({prefect_import:.2f} s) and orchestrating the flow run and its eight task runs "
            f"({orchestration:.2f} s, which includes up to 1 s that Prefect 3.8.8 spends at the end "
            "of every flow run joining its heartbeat thread, which sleeps in 1-second steps: kept "
            "against a running server, which marks a vanished run Crashed by its heartbeats, and "
            "off with a server of the run's own). The "
            f"other {rest:.1f} s is work the plain script does not do: the resume checkpoints, "
            "loading and checking the second model, the report's tables and pictures, the run's "
            "records. "
        )
    at_scale = [
        other.figures["ratio"]
        for other in rows
        if other.measure.startswith(ORCHESTRATION) and "synthetic" in other.measure
    ]
    if at_scale:
        text += f"On the larger synthetic set the ratio is {at_scale[0]:.2f}. "
    if all(other.met for other in rows if other.measure.startswith(INPUT_PIPELINE)):
        text += "Training itself is not slower: the input pipeline row met its target. "
    if row.met:
        return text
    return text + (
        "Meeting the target on a job this short would mean dropping Prefect orchestration or the "
        "checks and reports, and we chose not to."
    )


def _checkpoints(row: Row, rows: list[Row]) -> str:
    fastest, slowest = row.figures["fastest"], row.figures["slowest"]
    text = f"{row.figures['percent']:+.1f}% on epochs of {row.figures['epoch_seconds']:.2f} s. "
    if slowest > STALLED * fastest:
        return text + (
            f"Its samples range from {fastest:.2f} to {slowest:.2f} s: some runs stalled for "
            "seconds, from a cause this benchmark does not measure (the per-checkpoint cost is the "
            "one-checkpoint row), so the median here is not a stable measure of the checkpoints' "
            "cost. Run `./dev bench` again on a quiet machine."
        )
    if "S3 server" in row.measure:
        text += (
            "Into the store every checkpoint is also uploaded, weights then manifest (two PUTs to "
            "moto's server, a Python process sharing the two cores with training; the uploads of "
            "step checkpoints run in the writer's thread), and each improving epoch's best "
            "weights are uploaded on the training thread before a manifest may name them. "
        )
    text += (
        "On such short epochs the fixed part of each checkpoint weighs most: `ModelCheckpoint`'s "
        "synchronous Keras save of the best weights on every improving epoch, and the step "
        "checkpoints' copies and background writes, which share the two cores with training. "
    )
    kind = row.measure.split(",")[1]
    larger = [
        other
        for other in rows
        if other.measure.startswith(CHECKPOINTS)
        and other.measure.split(",")[1] == kind
        and "synthetic" in other.measure
        and ("S3 server" in other.measure) == ("S3 server" in row.measure)
        and other is not row
    ]
    if larger:
        text += (
            f"On the larger synthetic set (epochs of {larger[0].figures['epoch_seconds']:.2f} s) "
            f"the same checkpoints cost {larger[0].figures['percent']:+.1f}%."
        )
    return text


def _store_recovery(row: Row, rows: list[Row]) -> str:
    from trainflow.storage.leases import EXPIRY_SECONDS

    local = next((other.value for other in rows if other.measure == LOCAL_RESTART), None)
    text = (
        f"{row.value}. The killed process's lease on the run is fresh when the second process "
        "starts; its holder ran on this host and is gone, which the second process can tell "
        "for certain (the lease names host, boot and process), so it takes the lease over at "
        f"once instead of waiting {EXPIRY_SECONDS:.0f} s for it to expire (that wait remains "
        "for a holder on another machine, which may be alive; trainflow/storage/leases.py). "
    )
    if local is not None:
        text += (
            f"The same restart from a local directory, where the kernel releases a dead "
            f"process's flock at once, took {local}. "
        )
    return text


def _unexplained(row: Row, rows: list[Row]) -> str:
    return f"{row.value}; its cause has not been measured yet."


EXPLAINERS: dict[str, Callable[[Row, list[Row]], str]] = {
    ORCHESTRATION: _orchestration,
    CHECKPOINTS: _checkpoints,
    STORE_RECOVERY: _store_recovery,
}
