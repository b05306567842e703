"""Classification metrics from labels and predictions, and their Parquet tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import BaseModel


class ClassMetrics(BaseModel):
    """Precision, recall, F1 and support of one class."""

    label: int
    name: str
    precision: float
    recall: float
    f1: float
    support: int


class ClassificationReport(BaseModel):
    """Per-class metrics, their macro averages and the confusion matrix (rows: true labels)."""

    per_class: list[ClassMetrics]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    confusion_matrix: list[list[int]]


def classification_report(
    labels: np.ndarray, predicted: np.ndarray, class_names: list[str]
) -> ClassificationReport:
    """Compute the report; a class never predicted has precision 0 (and F1 0)."""
    num_classes = len(class_names)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_positives = np.diag(confusion).astype(np.float64)
    predicted_counts = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(
        true_positives, predicted_counts, out=np.zeros(num_classes), where=predicted_counts > 0
    )
    recall = np.divide(true_positives, support, out=np.zeros(num_classes), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros(num_classes), where=denominator > 0
    )
    return ClassificationReport(
        per_class=[
            ClassMetrics(
                label=label,
                name=class_names[label],
                precision=float(precision[label]),
                recall=float(recall[label]),
                f1=float(f1[label]),
                support=int(support[label]),
            )
            for label in range(num_classes)
        ],
        macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()),
        confusion_matrix=confusion.tolist(),
    )


def report_tables(report: ClassificationReport) -> tuple[pa.Table, pa.Table]:
    """Per-class metrics (one row a class) and the confusion matrix (one row a true/predicted pair)."""
    per_class = pa.Table.from_pylist([item.model_dump() for item in report.per_class])
    matrix = np.asarray(report.confusion_matrix)
    true_labels, predicted_labels = np.indices(matrix.shape)
    confusion = pa.table(
        {
            "true_label": true_labels.ravel(),
            "predicted_label": predicted_labels.ravel(),
            "count": matrix.ravel(),
        }
    )
    return per_class, confusion


def predictions_table(labels: np.ndarray, probabilities: np.ndarray) -> pa.Table:
    """Per-example predictions for error analysis: index, label, predicted class, confidence."""
    return pa.table(
        {
            "index": np.arange(len(labels), dtype=np.int64),
            "label": labels.astype(np.int64),
            "predicted": probabilities.argmax(axis=1).astype(np.int64),
            "confidence": probabilities.max(axis=1).astype(np.float32),
        }
    )
