"""Seeded, stratified train/validation/test splits, decided from the labels alone, and the one
pass over a source's images that hands each row to its split."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainflow.data.raw import RawSplit
from trainflow.data.validation import CheckedSplit, check_split, normalised_pixels
from trainflow.datasets import PreparationSpec
from trainflow.errors import DataSourceError
from trainflow.paths import PREPARED_SPLITS

# Decoded pixels read at a time while preparing: memory for one chunk, not for the dataset. Larger
# chunks prepare no faster (1,000,000 MNIST-sized images: 13.3 s with 16 MiB, 13.8 s with 8 MiB)
# but take more memory (the peak grew by 151 MB with 16 MiB, 125 MB with 8 MiB).
PREPARATION_CHUNK_BYTES = 8 * 2**20


def stratified_split(
    labels: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Split example indices by class in the given proportions; the rest goes to `train`.

    Deterministic for a seed: each class's indices are shuffled by one seeded generator, in class
    order, and each split's indices come back sorted.
    """
    generator = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("train", *fractions)}
    for label in np.unique(labels):
        indices = generator.permutation(np.flatnonzero(labels == label))
        start = 0
        for name, fraction in fractions.items():
            count = round(len(indices) * fraction)
            parts[name].append(indices[start : start + count])
            start += count
        parts["train"].append(indices[start:])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


@dataclass(frozen=True)
class SplitPlan:
    """Where every row of a source goes, decided from its labels alone: `checked` holds each source
    split's checks, `destinations` for each of its rows the index of its prepared split in
    PREPARED_SPLITS, and `labels` each prepared split's labels in row order. `pixel_dtype` is that
    of every prepared pixel: uint8, or float32 in [0, 1] if any split's pixels are floats."""

    checked: dict[str, CheckedSplit]
    destinations: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    image_shape: tuple[int, ...]
    pixel_dtype: np.dtype


def plan_splits(raw: dict[str, RawSplit], spec: PreparationSpec) -> SplitPlan:
    """Check the raw splits (all but their pixels' values) and decide the train, validation and
    test sets, with `check_classes` passed.

    One split (`all`) is split three ways; train + test keep the test set and carve validation out
    of train (`validation_fraction` of it); train + validation + test are kept as they are.
    """
    checked = {name: check_split(split) for name, split in raw.items()}
    origins = "; ".join(split.origin for split in raw.values())
    shapes = {name: split.shape[1:] for name, split in checked.items()}
    if len(set(shapes.values())) > 1:
        raise DataSourceError(f"{origins}: splits have different image shapes: {shapes}")
    if set(checked) == {"train", "validation", "test"}:
        indices = {name: {name: np.arange(len(split.labels))} for name, split in checked.items()}
    elif "all" in checked:
        fractions = {"validation": spec.validation_fraction, "test": spec.test_fraction}
        indices = {"all": stratified_split(checked["all"].labels, fractions, spec.seed)}
    else:
        fractions = {"validation": spec.validation_fraction}
        indices = {
            "train": stratified_split(checked["train"].labels, fractions, spec.seed),
            "test": {"test": np.arange(len(checked["test"].labels))},
        }
    labels = {
        name: checked[source].labels[index]
        for source, parts in indices.items()
        for name, index in parts.items()
    }
    check_classes(labels, spec, origins)
    # 8-bit splits beside float ones: all as floats in [0, 1], so the splits mean the same.
    float_pixels = np.dtype(np.float32)
    pixel_dtypes = {split.pixel_dtype for split in checked.values()}
    return SplitPlan(
        checked=checked,
        destinations={
            source: _destinations(len(checked[source].labels), parts)
            for source, parts in indices.items()
        },
        labels={name: labels[name] for name in PREPARED_SPLITS},
        image_shape=next(iter(shapes.values())),
        pixel_dtype=float_pixels if float_pixels in pixel_dtypes else np.dtype(np.uint8),
    )


def _destinations(count: int, parts: dict[str, np.ndarray]) -> np.ndarray:
    """For each of `count` rows, the index in PREPARED_SPLITS of the split whose indices hold it."""
    destinations = np.empty(count, dtype=np.int8)
    for name, index in parts.items():
        destinations[index] = PREPARED_SPLITS.index(name)
    return destinations


def stream_splits(
    raw: dict[str, RawSplit],
    plan: SplitPlan,
    write: Callable[[str, np.ndarray, np.ndarray], None],
) -> None:
    """Read every raw split once, chunk by chunk, check and normalise each chunk's pixels, and
    call `write(name, images, labels)` with the rows of each chunk that go to prepared split
    `name`. A split's indices are sorted, so each prepared split receives its rows in order."""
    for source, split in raw.items():
        checked, destinations = plan.checked[source], plan.destinations[source]
        pixel_bytes = math.prod(split.shape[1:]) * split.pixel_dtype.itemsize
        start = 0
        for chunk in split.image_chunks(max(1, PREPARATION_CHUNK_BYTES // pixel_bytes)):
            images = normalised_pixels(chunk, checked, plan.pixel_dtype)
            stop = start + len(images)
            chunk_destinations = destinations[start:stop]
            for index, name in enumerate(PREPARED_SPLITS):
                rows = chunk_destinations == index
                if rows.any():
                    write(name, images[rows], checked.labels[start:stop][rows])
            start = stop
            del chunk, images  # else held while the next chunk is read: two chunks in memory


def number_of_classes(labels: dict[str, np.ndarray], spec: PreparationSpec) -> int:
    """K, the number of classes: `spec.num_classes` if given, else the largest label + 1."""
    if spec.num_classes is not None:
        return spec.num_classes
    return 1 + max(int(split_labels.max()) for split_labels in labels.values())


def check_classes(labels: dict[str, np.ndarray], spec: PreparationSpec, origins: str) -> None:
    """Labels are 0..K-1 with K >= 2, and, unless the number of classes was given (a class may
    then be missing by design), every split has every class (`labels`: each split's)."""
    for name, split_labels in labels.items():
        if len(split_labels) == 0:
            raise DataSourceError(
                f"{origins}: the {name} split has no examples (more data, or other split fractions)"
            )
    count = number_of_classes(labels, spec)
    largest = max(int(split_labels.max()) for split_labels in labels.values())
    if largest >= count:
        raise DataSourceError(
            f"{origins}: labels go up to {largest}; --num-classes {count} allows 0..{count - 1}"
        )
    if count < 2:
        raise DataSourceError(
            f"{origins}: every label is 0; a classifier needs examples of two classes at least"
        )
    if spec.num_classes is not None:
        return
    for name, split_labels in labels.items():
        missing = sorted(set(range(count)) - set(np.unique(split_labels).tolist()))
        if missing:
            raise DataSourceError(
                f"{origins}: the {name} split has no examples of class "
                f"{', '.join(map(str, missing))}; "
                "every split needs every class (more data, or other split fractions), or pass "
                f"--num-classes {count} if a class is missing by design"
            )


def class_counts(labels: np.ndarray, num_classes: int) -> list[int]:
    """Number of examples of each class 0..num_classes-1."""
    return np.bincount(labels, minlength=num_classes).tolist()
