"""`trainflow demo-crash`: kill a real training run with SIGKILL, resume it, and report the cost.

Each run is a separate `trainflow run` process, as a user would start it; the kill is the run's own
`--kill-at-step`, so it lands right after a chosen global step.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from app.options import arguments_of
from trainflow.checkpoints.compare import differing_arrays
from trainflow.checkpoints.store import committed_steps
from trainflow.config import RunConfig
from trainflow.errors import UserInputError
from trainflow.paths import ArtifactPaths


class DemoReport(BaseModel):
    """What the demo measured."""

    run_name: str
    total_steps: int
    steps_per_epoch: int
    kill_step: int
    last_checkpoint_step: int | None
    resumed_from_step: int | None
    checkpointed_steps_redone: int
    steps_trained_again: int
    killed_seconds: float
    resumed_seconds: float
    test_accuracy: float
    uninterrupted_seconds: float | None = None
    uninterrupted_test_accuracy: float | None = None
    differing_arrays: list[str] | None = None

    @property
    def identical(self) -> bool | None:
        return None if self.differing_arrays is None else not self.differing_arrays


def plan_kill_step(config: RunConfig) -> tuple[int, int, int]:
    """(kill step, total steps, steps per epoch): `config.kill_at_step`, or a step drawn at random."""
    from tasks.prepare_data import prepare_data
    from trainflow.training.pipeline import steps_per_epoch

    data = prepare_data(config.source, config.preparation, ArtifactPaths.at(config.artifacts))
    epoch_steps = steps_per_epoch(data.rows["train"], config.batch_size)
    total_steps = epoch_steps * config.epochs
    kill_at_step = config.kill_at_step or random.randint(1, total_steps - 1)
    if kill_at_step >= total_steps:
        raise UserInputError(
            f"--kill-at-step {kill_at_step} is past the run's last step; give 1..{total_steps - 1}"
        )
    return kill_at_step, total_steps, epoch_steps


def demo_crash(config: RunConfig, verify: bool) -> DemoReport:
    """Run `config` killed right after step `config.kill_at_step` (random if None), run it again
    to completion, and with `verify` also run it uninterrupted and compare the final weights."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    config = config.model_copy(
        update={
            "run_name": config.run_name or f"demo-crash-{stamp}",
            "deterministic": config.deterministic or verify,
        }
    )
    kill_step, total_steps, steps_per_epoch = plan_kill_step(config)
    paths = ArtifactPaths.at(config.artifacts).run(config.run_name)

    killed_seconds, returncode, _ = _trainflow_run(config, kill_step)
    if returncode != -signal.SIGKILL:
        raise RuntimeError(f"the run ended (status {returncode}) before step {kill_step}")
    committed = committed_steps(paths)
    resumed_seconds, returncode, summary = _trainflow_run(config, None)
    if returncode != 0:
        raise RuntimeError(f"the resumed run failed with status {returncode}")
    resumed_from_step = summary["resumed_from_step"]
    report = DemoReport(
        run_name=config.run_name,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        kill_step=kill_step,
        last_checkpoint_step=max(committed, default=None),
        resumed_from_step=resumed_from_step,
        checkpointed_steps_redone=max(0, max(committed, default=0) - (resumed_from_step or 0)),
        steps_trained_again=kill_step - (resumed_from_step or 0),
        killed_seconds=killed_seconds,
        resumed_seconds=resumed_seconds,
        test_accuracy=summary["test_accuracy"],
    )
    if verify:
        reference_config = config.model_copy(
            update={"run_name": f"{config.run_name}-uninterrupted"}
        )
        seconds, returncode, reference = _trainflow_run(reference_config, None)
        if returncode != 0:
            raise RuntimeError(f"the uninterrupted run failed with status {returncode}")
        report = report.model_copy(
            update={
                "uninterrupted_seconds": seconds,
                "uninterrupted_test_accuracy": reference["test_accuracy"],
                "differing_arrays": differing_arrays(
                    Path(summary["weights_path"]), Path(reference["weights_path"])
                ),
            }
        )
    return report


def _trainflow_run(config: RunConfig, kill_step: int | None) -> tuple[float, int, dict]:
    """Run `trainflow run` for `config` in a new process: (seconds, exit status, JSON summary).
    Its log goes to this process's stderr, so the user watches the run die and resume."""
    run_config = config.model_copy(update={"kill_at_step": kill_step})
    arguments = [sys.executable, "-m", "app.cli", "run", "--json", *arguments_of(run_config)]
    began = time.monotonic()
    completed = subprocess.run(arguments, stdout=subprocess.PIPE, text=True)
    seconds = time.monotonic() - began
    summary = json.loads(completed.stdout) if completed.returncode == 0 else {}
    return seconds, completed.returncode, summary


def format_report(report: DemoReport) -> str:
    """The report as the lines the demo prints."""

    def where(step: int) -> str:
        epoch, step_in_epoch = divmod(step, report.steps_per_epoch)
        return f"epoch {epoch + 1}, step {step_in_epoch} of {report.steps_per_epoch}"

    resumed = (
        "no checkpoint; started over"
        if report.resumed_from_step is None
        else f"checkpoint step-{report.resumed_from_step:09d} ({where(report.resumed_from_step)})"
    )
    lines = [
        f"Failure-recovery demo, run {report.run_name}:",
        f"  killed:        SIGKILL right after global step {report.kill_step} of "
        f"{report.total_steps} ({where(report.kill_step)}), {report.killed_seconds:.1f} s after start",
        f"  resumed from:  {resumed}",
        f"  steps redone:  {report.checkpointed_steps_redone} checkpointed steps "
        f"({report.steps_trained_again} steps after the last checkpoint were trained again)",
    ]
    interrupted_seconds = report.killed_seconds + report.resumed_seconds
    if report.uninterrupted_seconds is None:
        lines.append(
            f"  time:          {interrupted_seconds:.1f} s for the killed and the resumed run "
            "(--verify also times an uninterrupted run)"
        )
        lines.append(f"  test accuracy: {report.test_accuracy:.4f}")
        return "\n".join(lines)
    lines += [
        f"  time lost:     {interrupted_seconds - report.uninterrupted_seconds:.1f} s (killed "
        f"{report.killed_seconds:.1f} s + resumed {report.resumed_seconds:.1f} s, uninterrupted "
        f"{report.uninterrupted_seconds:.1f} s)",
        f"  test accuracy: {report.test_accuracy:.4f} (uninterrupted run: "
        f"{report.uninterrupted_test_accuracy:.4f})",
    ]
    if report.identical:
        lines.append("Final weights are identical to the uninterrupted run's (bitwise).")
    else:
        lines.append(
            "Final weights DIFFER from the uninterrupted run's: "
            + ", ".join(report.differing_arrays)
        )
    return "\n".join(lines)
