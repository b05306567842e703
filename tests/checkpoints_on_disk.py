"""What a run left in its resume directory, read without the code under test (which would move
files aside): the newest checkpoint complete on disk, the leftovers of interrupted writes, and a
finished run's final checkpoint."""

from __future__ import annotations

from pathlib import Path

from trainflow.checkpoints.state import ResumeState
from trainflow.checkpoints.store import checkpoint_files, committed_steps, state_files
from trainflow.paths import RunPaths
from trainflow.results import TrainingResult
from trainflow.storage.digests import sha256_of_files


def newest_complete_checkpoint(resume_dir: Path) -> ResumeState | None:
    """The newest checkpoint whose manifest names weights that exist and match its sha256; None if
    there is none. It does not call `load_latest_checkpoint`, which resuming relies on: a rerun
    that ignored its checkpoints cannot agree with this by mistake."""
    for state_path in state_files(resume_dir) if resume_dir.is_dir() else []:
        state = ResumeState.model_validate_json(state_path.read_bytes())
        weights = resume_dir / state.weights_file
        if weights.is_file() and sha256_of_files([weights]) == state.weights_sha256:
            return state
    return None


def interrupted_writes(paths: RunPaths) -> list[str]:
    """Names of the files that checkpoint writes cut short by a kill leave in the run's resume
    directory: temporaries, and weights without their manifest."""
    resume_dir = paths.resume_dir
    if not resume_dir.is_dir():
        return []
    committed = {checkpoint_files(resume_dir, step)[0].name for step in committed_steps(paths)}
    return sorted(
        path.name
        for path in resume_dir.iterdir()
        if ".tmp-" in path.name
        or (path.name.endswith(".weights.h5") and path.name not in committed)
    )


def final_checkpoint(paths: RunPaths) -> Path:
    """The weights file, with every model and optimizer array, of the resume checkpoint at a
    finished run's last step."""
    result = TrainingResult.model_validate_json(paths.training_result.read_bytes())
    return checkpoint_files(paths.resume_dir, result.optimizer_iterations)[0]
