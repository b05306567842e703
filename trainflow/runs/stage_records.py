"""Records of finished post-training stages, so that a rerun repeats only what did not finish.

A stage's outputs are written atomically, then its record, which names the training result the
outputs were made from. A rerun skips the stage when the record matches the current training result
and the outputs are there.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from trainflow.paths import RunPaths
from trainflow.storage.atomic import write_json

logger = logging.getLogger("trainflow.stages")


def input_key(*inputs: Any) -> str:
    """A digest of the stage's inputs (JSON-compatible values)."""
    content = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(content.encode()).hexdigest()


def stage_is_done(paths: RunPaths, stage: str, key: str, outputs: list[Path]) -> bool:
    """True when `stage` finished for inputs `key` and its outputs still exist (and says so)."""
    record = paths.stage_record(stage)
    if not record.is_file() or not all(output.exists() for output in outputs):
        return False
    if json.loads(record.read_text()).get("input_key") != key:
        return False
    logger.info("Skipping %s: already done for this training result (%s)", stage, record)
    return True


def mark_stage_done(paths: RunPaths, stage: str, key: str) -> None:
    """Record that `stage` finished for inputs `key`."""
    write_json(paths.stage_record(stage), {"stage": stage, "input_key": key})
