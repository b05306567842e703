"""Opening and closing a run: its directory, its record, and the summary the flow returns."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel

from tasks.evaluate_model import Evaluation
from tasks.persist_model import PersistedModel
from tasks.report_run import RunReport
from tasks.train_model import TrainingResult
from trainflow.artifact_keys import summary_key
from trainflow.config import RunConfig
from trainflow.paths import RunPaths
from trainflow.runs import close_run, open_run


class RunSummary(BaseModel):
    """What a finished run reports (`trainflow run --json` prints it).

    `resumed_from` counts the epochs already done when training last resumed, and
    `resumed_from_step` the global steps; both are None for a run that never resumed.
    """

    run_name: str
    run_dir: Path
    model_path: Path
    weights_path: Path
    saved_model_path: Path
    evaluation_path: Path
    reports_dir: Path
    data_fingerprint: str
    test_accuracy: float
    test_loss: float
    macro_f1: float
    epochs_completed: int
    best_epoch: int
    stopped_early: bool
    resumed_from: int | None
    resumed_from_step: int | None


def default_run_name(flow_run_name: str, flow_run_id: str) -> str:
    """A new, unique run name, stable across retries of the same flow run."""
    return f"{flow_run_name}-{flow_run_id[:8]}"


def finish_run(
    paths: RunPaths,
    training: TrainingResult,
    persisted: PersistedModel,
    evaluation: Evaluation,
    report: RunReport,
) -> RunSummary:
    """Mark the run completed and summarise it."""
    summary = RunSummary(
        run_name=paths.name,
        run_dir=paths.run_dir,
        model_path=persisted.keras_model,
        weights_path=persisted.weights,
        saved_model_path=persisted.saved_model,
        evaluation_path=evaluation.path,
        reports_dir=report.learning_curves.parent,
        data_fingerprint=training.data_fingerprint,
        test_accuracy=evaluation.accuracy,
        test_loss=evaluation.loss,
        macro_f1=evaluation.report.macro_f1,
        epochs_completed=training.epochs_completed,
        best_epoch=training.best_epoch,
        stopped_early=training.stopped_early,
        resumed_from=training.resumed_from,
        resumed_from_step=training.resumed_from_step,
    )
    close_run(
        paths,
        epochs_completed=summary.epochs_completed,
        resumed_from=summary.resumed_from,
        test_accuracy=summary.test_accuracy,
    )
    return summary


def summary_markdown(config: RunConfig, summary: RunSummary, extra: str = "") -> str:
    """The run summary shown in the Prefect UI: parameters, data, resume events, metrics."""
    resumed = (
        "never interrupted"
        if summary.resumed_from is None
        else f"resumed after {summary.resumed_from} epochs (global step {summary.resumed_from_step})"
    )
    parameters = "\n".join(
        f"| `{name}` | `{value}` |" for name, value in config.model_dump(mode="json").items()
    )
    return f"""# trainflow run `{summary.run_name}`

| metric | value |
| --- | --- |
| test accuracy | {summary.test_accuracy:.4f} |
| test loss | {summary.test_loss:.4f} |
| macro F1 | {summary.macro_f1:.4f} |
| epochs completed | {summary.epochs_completed} (best: {summary.best_epoch}, stopped early: {summary.stopped_early}) |
| resume | {resumed} |
| data | `{config.dataset}` (prepared data `{summary.data_fingerprint}`) |
| model | `{summary.model_path}` |
| pictures | `{summary.reports_dir}`: learning_curves.png, confusion_matrix.png, confident_mistakes.png |
{extra}
## Parameters

| parameter | value |
| --- | --- |
{parameters}
"""


def publish_summary(config: RunConfig, summary: RunSummary, extra: str = "") -> None:
    """Publish (a new version of) the run's markdown summary artifact; call inside a flow run."""
    create_markdown_artifact(
        key=summary_key(summary.run_name),
        markdown=summary_markdown(config, summary, extra),
        description=f"Summary of trainflow run {summary.run_name}",
    )


@task(name="start_run")
def start_run_task(config: RunConfig) -> RunPaths:
    """Open the run named in `config`, or a new one named after the Prefect flow run."""
    run_name = config.run_name or default_run_name(flow_run.name, flow_run.id)
    return open_run(config, run_name, flow_run_id=flow_run.id)


@task(name="finish_run")
def finish_run_task(
    config: RunConfig,
    paths: RunPaths,
    training: TrainingResult,
    persisted: PersistedModel,
    evaluation: Evaluation,
    report: RunReport,
) -> RunSummary:
    """Close the run and publish its summary artifact."""
    summary = finish_run(paths, training, persisted, evaluation, report)
    publish_summary(config, summary)
    return summary
