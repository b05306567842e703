"""The report's pictures, drawn headless with matplotlib: learning curves, confusion matrix,
and the most confident mistakes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from trainflow.storage.atomic import atomic_path

DPI = 120


def learning_curves(
    history: dict[str, list[float]], resumed_epochs: list[float], path: Path
) -> None:
    """Train and validation loss and accuracy per epoch; a dashed line where training resumed
    (at the fraction of the epoch it had reached)."""
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, metric, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        for prefix, label, marker in (("", "train", "o"), ("val_", "validation", "s")):
            if f"{prefix}{metric}" in history:
                axis.plot(epochs, history[f"{prefix}{metric}"], marker=marker, label=label)
        for index, resumed in enumerate(resumed_epochs):
            axis.axvline(
                resumed,
                color="tab:red",
                linestyle="--",
                linewidth=1,
                label="resumed" if index == 0 else None,
            )
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.set_xticks(epochs)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("Learning curves")
    _save(figure, path)


def confusion_heatmap(matrix: list[list[int]], path: Path) -> None:
    """The confusion matrix as a heatmap with the count in every cell."""
    counts = np.asarray(matrix)
    classes = np.arange(len(counts))
    figure, axis = plt.subplots(figsize=(7.5, 6.5))
    image = axis.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axis, label="examples")
    threshold = counts.max() / 2 if counts.size else 0
    for true_label in classes:
        for predicted_label in classes:
            value = counts[true_label, predicted_label]
            axis.text(
                predicted_label,
                true_label,
                str(value),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if value > threshold else "black",
            )
    axis.set_xticks(classes)
    axis.set_yticks(classes)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title("Confusion matrix (test set)")
    _save(figure, path)


def confident_mistakes(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    path: Path,
    count: int = 16,
) -> None:
    """A grid of the misclassified test images the model was most sure about."""
    wrong = np.flatnonzero(predicted != labels)
    chosen = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    columns = 4
    rows = max(1, int(np.ceil(len(chosen) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 2.2, rows * 2.5), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, index in zip(axes.ravel(), chosen):
        axis.imshow(images[index], cmap="gray_r")
        axis.set_title(
            f"#{index}: true {labels[index]}\npredicted {predicted[index]} ({confidence[index]:.0%})",
            fontsize=9,
        )
    title = "Most confident mistakes" if len(chosen) else "No mistakes on the test set"
    figure.suptitle(title)
    _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=DPI, format="png")
    plt.close(figure)
