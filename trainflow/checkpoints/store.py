"""The resume checkpoints of a run on disk: finding the newest valid one, and setting invalid files aside.

A checkpoint is two files in the resume directory, named by the global training step:
`step-NNNNNNNNN.weights.h5` (weights and optimizer state) and `step-NNNNNNNNN.json` (a
`ResumeState`). The JSON is the manifest: it is written last, after the weights are fsynced and
renamed into place, and it names their sha256 (see writer.py). A checkpoint without its JSON, or
whose weights do not match it, is never resumed from: its files are moved aside into the quarantine
directory with a warning.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pydantic import ValidationError

from trainflow.checkpoints.state import (
    CHECKPOINT_FORMAT_VERSION,
    ResumeState,
)
from trainflow.paths import RunPaths
from trainflow.storage.digests import sha256_of_files

logger = logging.getLogger("trainflow.checkpoints")

STATE_FILE = re.compile(r"^step-(?P<step>\d{9})\.json$")


def checkpoint_files(resume_dir: Path, global_step: int) -> tuple[Path, Path]:
    """The weights file and the state file (manifest) of the checkpoint at `global_step`."""
    stem = f"step-{global_step:09d}"
    return resume_dir / f"{stem}.weights.h5", resume_dir / f"{stem}.json"


def load_latest_checkpoint(paths: RunPaths) -> ResumeState | None:
    """The newest valid checkpoint's state, after moving every invalid file aside.

    Invalid: a manifest that does not parse, weights missing or not matching the manifest's sha256,
    weights without a manifest, and temporaries of an interrupted write. An I/O error while reading
    is raised (and the task retried); nothing is moved then.
    """
    resume_dir = paths.storage.local_copy(paths.resume_dir)  # in a store: as it is there now
    if not resume_dir.is_dir():
        return None
    valid: list[tuple[ResumeState, Path]] = []
    for state_path in state_files(resume_dir):
        state = _valid_state(resume_dir, state_path)
        if state is not None:
            valid.append((state, state_path))
    kept = {name for state, path in valid for name in (path.name, state.weights_file)}
    invalid = sorted(path for path in resume_dir.iterdir() if path.name not in kept)
    if invalid:
        quarantine(paths, invalid)
    if not valid:
        if invalid:
            logger.warning("No valid checkpoint left in %s: starting from epoch 0", resume_dir)
        return None
    return valid[0][0]


def quarantine(paths: RunPaths, files: list[Path]) -> None:
    """Move `files` into the run's quarantine directory for inspection (never delete them), with
    a warning."""
    quarantine_dir = paths.quarantine_dir
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in files:
        target = quarantine_dir / path.name
        suffix = 1
        while target.exists():
            target = quarantine_dir / f"{path.name}.{suffix}"
            suffix += 1
        paths.storage.move(path, target)
        moved.append(path.name)
    logger.warning(
        "Set aside invalid checkpoint files (truncated, garbled, or without manifest) in %s: %s",
        quarantine_dir,
        ", ".join(moved),
    )


def _valid_state(resume_dir: Path, state_path: Path) -> ResumeState | None:
    """The checkpoint's state if it verifies; None if it is damaged: a manifest that does not
    parse, or weights missing or not matching the manifest's sha256. An error reading either file
    is raised, not taken for damage: a passing I/O fault must be retried, never lead to setting
    aside (or, with no checkpoint left, discarding) a good checkpoint."""
    content = state_path.read_bytes()
    try:
        state = ResumeState.model_validate_json(content)
    except ValidationError:  # also invalid JSON and invalid UTF-8
        return None
    weights_path = resume_dir / state.weights_file
    if (
        state.format_version != CHECKPOINT_FORMAT_VERSION
        or weights_path.parent != resume_dir
        or not weights_path.is_file()
    ):
        return None
    return state if sha256_of_files([weights_path]) == state.weights_sha256 else None


def committed_steps(paths: RunPaths) -> list[int]:
    """Global steps of the run's checkpoints whose manifest is in place, newest first (not
    verified); in a store, as the store holds them now (another process may have written them)."""
    resume_dir = paths.storage.local_copy(paths.resume_dir)
    return [step_of(path) for path in state_files(resume_dir)] if resume_dir.is_dir() else []


def state_files(resume_dir: Path) -> list[Path]:
    """Manifests, newest step first."""
    found = [path for path in resume_dir.iterdir() if STATE_FILE.match(path.name)]
    return sorted(found, key=step_of, reverse=True)


def step_of(state_path: Path) -> int:
    match = STATE_FILE.match(state_path.name)
    return int(match["step"]) if match else -1
