"""The report's pictures, drawn headless with matplotlib: learning curves, confusion matrix,
and the most confident mistakes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display: pictures as PNG bytes only

import matplotlib.pyplot as plt
import numpy as np

DPI = 120
MAX_FIGURE_INCHES = 20
# Counts in the cells up to this many classes, class names on the axes up to this many.
MAX_ANNOTATED_CLASSES = 20
MAX_LABELLED_CLASSES = 60
# Of each cell of the mistakes gallery, the share above the image kept for its title.
TITLE_SHARE = 0.4


def learning_curves(history: dict[str, list[float]], resumed_epochs: list[float]) -> bytes:
    """As a PNG: train and validation loss and the model's first metric (its accuracy) per epoch; a dashed
    line where training resumed (at the fraction of the epoch it had reached)."""
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    # The model's own first metric: `accuracy`, or whatever its builder named it (`acc`, ...).
    first = next((key for key in history if key != "loss" and not key.startswith("val_")), "")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, metric, title in ((axes[0], "loss", "Loss"), (axes[1], first, first.title())):
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
    return _png(figure)


def confusion_heatmap(matrix: list[list[int]], class_names: list[str]) -> bytes:
    """As a PNG: the confusion matrix as a heatmap, with the class names, and the count in every cell while
    the cells are large enough to read."""
    counts = np.asarray(matrix)
    classes = np.arange(len(counts))
    side = min(MAX_FIGURE_INCHES, max(6.5, 0.35 * len(classes)))
    figure, axis = plt.subplots(figsize=(side + 1, side))
    image = axis.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axis, label="examples")
    if len(classes) <= MAX_ANNOTATED_CLASSES:
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
    if len(classes) <= MAX_LABELLED_CLASSES:
        axis.set_xticks(classes, class_names, rotation=90 if _long(class_names) else 0)
        axis.set_yticks(classes, class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title("Confusion matrix (test set)")
    return _png(figure)


def confident_mistake_rows(
    labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, count: int = 16
) -> np.ndarray:
    """The rows of the `count` misclassified examples the model was most sure about, surest first."""
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-confidence[wrong], kind="stable")][:count]


def confident_mistakes(
    images: np.ndarray,
    chosen: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    class_names: list[str],
) -> bytes:
    """As a PNG: a grid of the misclassified test images `confident_mistake_rows` chose (`images`
    are theirs, in that order; in colour for colour images)."""
    columns = 4
    rows = max(1, int(np.ceil(len(chosen) / columns)))
    figure, axis = plt.subplots(figsize=(columns * 2.2, rows * 2.5 + 0.4))
    axis.axis("off")
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.5 / (rows * 2.5 + 0.4))
    if len(chosen):
        # One mosaic drawn once: a grid of axes, one per image, costs several times as much to
        # lay out and render (measured: 0.7 s against 0.2 s for 16 MNIST images).
        colour = images.ndim == 4 and images.shape[-1] == 3
        shown = images if colour or images.ndim == 3 else images[..., 0]  # other channels: first
        mosaic, (height, width) = _mosaic(shown, columns, rows)
        axis.imshow(mosaic, cmap=None if colour else "gray_r", interpolation="nearest")
        for position, index in enumerate(chosen):
            row, column = divmod(position, columns)
            axis.text(
                column * width + width / 2,
                row * height + TITLE_SHARE * height * 0.9,
                f"#{index}: true {class_names[labels[index]]}\npredicted "
                f"{class_names[predicted[index]]} ({confidence[index]:.0%})",
                ha="center",
                va="bottom",
                fontsize=9,
            )
    title = "Most confident mistakes" if len(chosen) else "No mistakes on the test set"
    figure.suptitle(title)
    return _png(figure, tight=False)


def _mosaic(images: np.ndarray, columns: int, rows: int) -> tuple[np.ndarray, tuple[int, int]]:
    """`images` (N, H, W) or (N, H, W, 3) tiled `columns` across, each in a cell with room above
    it for its title and a margin around it, blank (the lowest value shown) elsewhere; and the
    cell's (height, width)."""
    height, width = images.shape[1:3]
    margin = max(1, width // 10)
    top = int(TITLE_SHARE * height / (1 - TITLE_SHARE))
    cell = (top + height + margin, width + 2 * margin)
    if images.ndim == 3:  # shown gray_r: the lowest value is white
        blank = images.min()
    else:  # RGB: white is the largest value of the type (uint8), or 1 (float pixels in [0, 1])
        blank = np.iinfo(images.dtype).max if images.dtype.kind in "ui" else 1.0
    mosaic = np.full((rows * cell[0], columns * cell[1], *images.shape[3:]), blank, images.dtype)
    for position, image in enumerate(images):
        row, column = divmod(position, columns)
        y, x = row * cell[0] + top, column * cell[1] + margin
        mosaic[y : y + height, x : x + width] = image
    return mosaic, cell


def _long(names: list[str]) -> bool:
    return max(map(len, names), default=0) > 3


def _png(figure: plt.Figure, tight: bool = True) -> bytes:
    if tight:
        figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=DPI, format="png")
    plt.close(figure)
    return buffer.getvalue()
