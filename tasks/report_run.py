"""Stage 6: the report people look at: the training history as Parquet, learning curves, the
confusion matrix and the most confident mistakes as PNG files."""

from __future__ import annotations

import logging

import pyarrow.parquet as pq
from prefect import task
from prefect.artifacts import create_table_artifact

from trainflow.data.prepared import PreparedSplit
from trainflow.orchestration.artifact_keys import classes_key
from trainflow.paths import RunPaths
from trainflow.reports import plots
from trainflow.reports.history import history_table
from trainflow.results import Evaluation, PreparedData, RunReport, TrainingResult
from trainflow.runs.stage_records import run_stage_once

logger = logging.getLogger("trainflow.report")
STAGE = "report_run"


def report_run(
    training: TrainingResult, evaluation: Evaluation, data: PreparedData, paths: RunPaths
) -> RunReport:
    """Write the history table and draw the three pictures into `paths.reports_dir`."""
    report = RunReport(
        history_table=paths.history_table,
        per_class_table=paths.per_class_table,
        confusion_table=paths.confusion_table,
        predictions_table=paths.predictions_table,
        learning_curves=paths.learning_curves_image,
        confusion_matrix=paths.confusion_image,
        confident_mistakes=paths.mistakes_image,
    )
    run_stage_once(
        paths,
        STAGE,
        [
            training.model_identity,
            training.model_dump(mode="json", include={"resumes"}),  # marked on the curves
            evaluation.model_dump(mode="json"),
        ],
        [
            report.history_table,
            report.learning_curves,
            report.confusion_matrix,
            report.confident_mistakes,
        ],
        lambda: _draw(training, evaluation, data, report, paths),
    )
    logger.info("Report written to %s", paths.storage.location(paths.reports_dir))
    return report


def _draw(
    training: TrainingResult,
    evaluation: Evaluation,
    data: PreparedData,
    report: RunReport,
    paths: RunPaths,
) -> None:
    storage = paths.storage
    resumed_epochs = [resume.epochs_done + 1 for resume in training.resumes]
    storage.write_table(report.history_table, history_table(training.history, resumed_epochs))
    curves = plots.learning_curves(
        training.history,
        [
            resume.epochs_done + resume.step_in_epoch / training.steps_per_epoch + 0.5
            for resume in training.resumes
        ],
    )
    storage.write_bytes(report.learning_curves, curves)
    storage.write_bytes(
        report.confusion_matrix,
        plots.confusion_heatmap(evaluation.report.confusion_matrix, training.class_names),
    )
    predictions = pq.read_table(
        evaluation.predictions, columns=["label", "predicted", "confidence"]
    )
    labels, predicted, confidence = (column.to_numpy() for column in predictions.columns)
    chosen = plots.confident_mistake_rows(labels, predicted, confidence)
    images = PreparedSplit.of(data.paths, "test").images_at(chosen)  # those rows only
    mistakes = plots.confident_mistakes(
        images, chosen, labels, predicted, confidence, training.class_names
    )
    storage.write_bytes(report.confident_mistakes, mistakes)


@task(name="report_run")
def report_run_task(
    training: TrainingResult, evaluation: Evaluation, data: PreparedData, paths: RunPaths
) -> RunReport:
    """Write the report and publish the per-class metrics as a table artifact."""
    report = report_run(training, evaluation, data, paths)
    create_table_artifact(
        key=classes_key(paths.name),
        table=[item.model_dump() for item in evaluation.report.per_class],
        description=f"Per-class test metrics of trainflow run {paths.name}",
    )
    return report
