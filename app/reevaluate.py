"""`trainflow evaluate RUN_DIR`: evaluate a finished run's saved files again, on its own dataset or
another one, and rewrite its evaluation and report."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.evaluate_model import STAGE as EVALUATE_STAGE
from tasks.evaluate_model import evaluate_model
from tasks.prepare_data import prepare_data
from tasks.report_run import STAGE as REPORT_STAGE
from tasks.report_run import report_run
from trainflow.config import RunConfig
from trainflow.errors import UserInputError
from trainflow.paths import ArtifactPaths, RunPaths
from trainflow.results import Evaluation, PersistedModel, TrainingResult
from trainflow.runs.records import read_record
from trainflow.runs.stage_records import forget_stage
from trainflow.storage.locations import is_url


def run_paths_of(run_dir: str | Path) -> RunPaths:
    """The run at `run_dir`: a directory under `<artifacts>/runs/`, or its URL in a store."""
    run_dir = os.fspath(run_dir)
    root, _, name = run_dir.rstrip("/").rpartition("/runs/")
    if is_url(run_dir) and root:
        return ArtifactPaths.at(root).run(name)
    local = Path(run_dir).resolve()
    return ArtifactPaths.at(local.parent.parent).run(local.name)


def reevaluate_run(run_dir: str | Path, dataset: str | None) -> Evaluation:
    """Evaluate the run in `run_dir` (a directory, or its URL in an object store) on `dataset`
    (default: the one it was trained on)."""
    paths = run_paths_of(run_dir)
    artifacts = ArtifactPaths(root=paths.storage.root)
    paths.storage.refresh(paths.run_dir)  # from an object store: the run as it is there
    record = read_record(paths)
    if record is None or not paths.training_result.is_file() or not paths.keras_model.is_file():
        raise UserInputError(
            f"{run_dir} is not a finished trainflow run (no run.json, training.json or "
            "model/model.keras); give a directory under artifacts/runs/ that `trainflow runs` lists"
        )
    options = {**record.config, **({"dataset": dataset} if dataset else {})}
    config = RunConfig.model_validate(options)
    data = prepare_data(config.source, config.preparation, artifacts)
    training = TrainingResult.model_validate_json(paths.training_result.read_text())
    if data.image_shape != training.image_shape:
        raise UserInputError(
            f"{config.dataset} has images of {data.image_shape}, the model takes "
            f"{training.image_shape}; evaluate on data of the model's image size"
        )
    if data.num_classes != training.num_classes:
        raise UserInputError(
            f"{config.dataset} has {data.num_classes} classes, the model {training.num_classes}; "
            "evaluate on data of the model's classes"
        )
    persisted = PersistedModel(
        keras_model=paths.keras_model, saved_model=paths.saved_model, weights=paths.weights
    )
    for stage in (EVALUATE_STAGE, REPORT_STAGE):
        forget_stage(paths, stage)  # asked to evaluate again: the files may have changed
    evaluation = evaluate_model(persisted, training, data, paths)
    report_run(training, evaluation, data, paths)
    return evaluation
