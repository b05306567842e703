"""Seeded, stratified train/validation/test splits of normalised data."""

from __future__ import annotations

import numpy as np

from trainflow.config import PreparationSpec
from trainflow.data.raw import RawSplit
from trainflow.data.validation import normalise_split, unit_pixels
from trainflow.errors import DataSourceError


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


def split_dataset(
    raw: dict[str, RawSplit], spec: PreparationSpec
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Normalise the raw splits and produce train, validation and test sets.

    One split (`all`) is split three ways; train + test keep the test set and carve validation out
    of train (`validation_fraction` of it); train + validation + test are kept as they are.
    """
    normalised = {name: normalise_split(split) for name, split in raw.items()}
    if len({images.dtype for images, _ in normalised.values()}) > 1:
        # 8-bit splits beside float ones: all as floats in [0, 1], so the splits mean the same.
        normalised = {
            name: (unit_pixels(images), labels) for name, (images, labels) in normalised.items()
        }
    origins = "; ".join(split.origin for split in raw.values())
    shapes = {name: images.shape[1:] for name, (images, _) in normalised.items()}
    if len(set(shapes.values())) > 1:
        raise DataSourceError(f"{origins}: splits have different image shapes: {shapes}")
    if set(normalised) == {"train", "validation", "test"}:
        result = normalised
    elif "all" in normalised:
        images, labels = normalised["all"]
        fractions = {"validation": spec.validation_fraction, "test": spec.test_fraction}
        indices = stratified_split(labels, fractions, spec.seed)
        result = {name: (images[index], labels[index]) for name, index in indices.items()}
    else:
        images, labels = normalised["train"]
        indices = stratified_split(labels, {"validation": spec.validation_fraction}, spec.seed)
        result = {name: (images[index], labels[index]) for name, index in indices.items()}
        result["test"] = normalised["test"]
    check_classes(result, spec, origins)
    return result


def number_of_classes(
    splits: dict[str, tuple[np.ndarray, np.ndarray]], spec: PreparationSpec
) -> int:
    """K, the number of classes: `spec.num_classes` if given, else the largest label + 1."""
    if spec.num_classes is not None:
        return spec.num_classes
    return 1 + max(int(labels.max()) for _, labels in splits.values())


def check_classes(
    splits: dict[str, tuple[np.ndarray, np.ndarray]], spec: PreparationSpec, origins: str
) -> None:
    """Labels are 0..K-1 with K >= 2, and, unless the number of classes was given (a class may
    then be missing by design), every split has every class."""
    for name, (_, labels) in splits.items():
        if len(labels) == 0:
            raise DataSourceError(
                f"{origins}: the {name} split has no examples (more data, or other split fractions)"
            )
    count = number_of_classes(splits, spec)
    largest = max(int(labels.max()) for _, labels in splits.values())
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
    for name, (_, labels) in splits.items():
        missing = sorted(set(range(count)) - set(np.unique(labels).tolist()))
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
