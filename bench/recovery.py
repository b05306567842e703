"""(3) Recovery cost: SIGKILL a `trainflow run` mid-epoch, start it again with the same run name,
and time the restart until its first resumed step has run; count the steps done twice; compare
the killed + resumed wall time with an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.harness import MNIST_COMMAND_SOURCE, MNIST_SOURCE, TRAINFLOW, Row, spread
from trainflow.checkpoints.store import committed_steps
from trainflow.paths import ArtifactPaths
from trainflow.training.callbacks.monitoring import FirstResumedStep

FIRST_STEP_LINE = FirstResumedStep.MESSAGE.split("(")[0]


def _command(artifacts: Path, run_name: str, epochs: int, every: int) -> list[str]:
    return [
        TRAINFLOW,
        "run",
        "--json",
        "--dataset",
        MNIST_SOURCE,
        "--epochs",
        str(epochs),
        "--checkpoint-every",
        str(every),
        "--artifacts",
        str(artifacts),
        "--run-name",
        run_name,
    ]


def _run(
    arguments: list[str], environment: dict[str, str]
) -> tuple[float, float | None, int, dict]:
    """(wall seconds, seconds until the first resumed step was logged or None, exit status, the
    JSON summary or {})."""
    with tempfile.TemporaryFile(mode="w+") as stdout:
        began = time.monotonic()
        process = subprocess.Popen(
            arguments, env=environment, stdout=stdout, stderr=subprocess.PIPE, text=True
        )
        first_step = None
        for line in process.stderr:
            if first_step is None and FIRST_STEP_LINE in line:
                first_step = time.monotonic() - began
        status = process.wait()
        seconds = time.monotonic() - began
        stdout.seek(0)
        summary = json.loads(stdout.read()) if status == 0 else {}
    return seconds, first_step, status, summary


def recovery_cost(
    api_url: str, directory: Path, repeats: int, epochs: int, every: int, kill_step: int
) -> list[Row]:
    """Kill each run right after global step `kill_step` (checkpoints every `every` steps)."""
    environment = {**os.environ, "PREFECT_API_URL": api_url}
    artifacts = directory / "recovery"
    restart, redone, again, interrupted, uninterrupted = [], [], [], [], []
    for repeat in range(repeats):
        name = f"recovery-{repeat}"
        seconds, _, status, _ = _run(
            _command(artifacts, f"{name}-whole", epochs, every), environment
        )
        if status != 0:
            raise RuntimeError(f"the uninterrupted run {name}-whole failed ({status})")
        uninterrupted.append(seconds)
        command = _command(artifacts, name, epochs, every)
        killed, _, status, _ = _run([*command, "--kill-at-step", str(kill_step)], environment)
        if status != -signal.SIGKILL:
            raise RuntimeError(f"run {name} was not killed at step {kill_step} (status {status})")
        last_checkpoint = max(committed_steps(ArtifactPaths.at(artifacts).run(name).resume_dir))
        resumed, first_step, status, summary = _run(command, environment)
        if status != 0 or first_step is None:
            raise RuntimeError(f"the resumed run {name} failed ({status}) or never resumed")
        restart.append(first_step)
        redone.append(last_checkpoint - summary["resumed_from_step"])
        again.append(kill_step - summary["resumed_from_step"])
        interrupted.append(killed + resumed)
    how = (
        f"trainflow run --dataset {MNIST_COMMAND_SOURCE} --epochs {epochs} --checkpoint-every "
        f"{every} --run-name R --kill-at-step {kill_step}, then the same without --kill-at-step"
    )
    return [
        Row(
            "recovery: checkpointed steps redone after a SIGKILL",
            f"{max(redone)} (every run; {statistics.median(again):.0f} uncheckpointed steps "
            f"after the last checkpoint, step {kill_step - statistics.median(again):.0f}, "
            "trained again)",
            "0",
            max(redone) == 0,
            how,
        ),
        Row(
            "recovery: restart to the first resumed step done",
            spread(restart),
            "<= 10 s",
            statistics.median(restart) <= 10,
            how,
        ),
        Row(
            "recovery: killed + resumed vs uninterrupted, wall time",
            f"{spread(interrupted)} vs {spread(uninterrupted)} "
            f"(+{statistics.median(interrupted) - statistics.median(uninterrupted):.1f} s)",
            "(reported)",
            None,
            how,
        ),
    ]
