"""Records of finished post-training stages, so that a rerun repeats only what did not finish.

A stage's outputs are written atomically, then its record, which names the inputs the outputs were
made from (the training result, the files evaluated). A rerun skips the stage when the record
matches the current inputs and the outputs are there. Paths in the inputs count by their place
under the artifacts root, not by where it is: another machine's mirror of the same store (or the
same directory moved) has the same keys, so a run resumed there skips what was finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trainflow.paths import RunPaths

logger = logging.getLogger("trainflow.stages")


def input_key(artifacts_root: Path, *inputs: Any) -> str:
    """A digest of the stage's inputs (JSON-compatible values), with paths under
    `artifacts_root` taken relative to it."""
    content = json.dumps(inputs, sort_keys=True, default=str)
    content = content.replace(json.dumps(str(artifacts_root))[1:-1] + "/", "<artifacts>/")
    return hashlib.sha256(content.encode()).hexdigest()


def run_stage_once(
    paths: RunPaths,
    stage: str,
    inputs: Sequence[Any],
    outputs: Sequence[Path],
    work: Callable[[], None],
) -> None:
    """Run `work`, which writes `outputs`, unless `stage` already finished for `inputs` (JSON
    values) and its outputs are still there; then record that it finished."""
    key = input_key(paths.storage.root, *inputs)
    if stage_is_done(paths, stage, key, outputs):
        logger.info(
            "Skipping %s: already done for this training result (%s)",
            stage,
            paths.stage_record(stage),
        )
        return
    work()
    paths.storage.write_json(paths.stage_record(stage), {"stage": stage, "input_key": key})


def stage_is_done(paths: RunPaths, stage: str, key: str, outputs: Sequence[Path]) -> bool:
    """True when `stage` finished for inputs `key` and its outputs still exist.

    A record that does not parse counts as not finished (the stage runs again and rewrites it); an
    error reading it is raised, so that a passing I/O fault is retried rather than redoing work.
    """
    if not all(output.exists() for output in outputs):  # the run's files came at `open_run`
        return False
    try:
        recorded = json.loads(paths.stage_record(stage).read_text())
    except FileNotFoundError:
        return False
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(recorded, dict) and recorded.get("input_key") == key


def forget_stage(paths: RunPaths, stage: str) -> None:
    """Drop the record that `stage` finished, so that it runs again (re-evaluation)."""
    paths.storage.remove(paths.stage_record(stage))
