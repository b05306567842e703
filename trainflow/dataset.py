"""Checking, normalising, splitting and storing image datasets as Parquet."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainflow.config import SplitSpec
from trainflow.errors import DataSourceError
from trainflow.sources import (
    IMAGE_COLUMN,
    IMAGE_SHAPE_METADATA_KEY,
    LABEL_COLUMN,
    RawSplit,
    read_parquet_split,
)

NUM_CLASSES = 10
MAX_PIXEL_VALUE = 255


def normalise_split(split: RawSplit) -> tuple[np.ndarray, np.ndarray]:
    """Check one split and return float32 images in [0, 1] of shape (N, H, W) and int64 labels.

    Integer pixels must lie in 0..255 and are divided by 255; float pixels must already lie in [0, 1].
    """
    images, labels, origin = split.images, split.labels, split.origin
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise DataSourceError(
            f"{origin}: images have shape {images.shape}; expected (count, height, width)"
        )
    if labels.ndim != 1:
        raise DataSourceError(f"{origin}: labels have shape {labels.shape}; expected (count,)")
    if len(images) != len(labels):
        raise DataSourceError(f"{origin}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DataSourceError(f"{origin}: no examples")
    return _normalised_pixels(images, origin), _checked_labels(labels, origin)


def _normalised_pixels(images: np.ndarray, origin: str) -> np.ndarray:
    if np.issubdtype(images.dtype, np.integer):
        if images.min() < 0 or images.max() > MAX_PIXEL_VALUE:
            raise DataSourceError(f"{origin}: integer pixels must lie in 0..{MAX_PIXEL_VALUE}")
        return images.astype(np.float32) / np.float32(MAX_PIXEL_VALUE)
    if not np.issubdtype(images.dtype, np.floating):
        raise DataSourceError(
            f"{origin}: pixels have dtype {images.dtype}; expected integer or float"
        )
    if not np.isfinite(images).all():
        raise DataSourceError(f"{origin}: pixels contain NaN or infinite values")
    if images.min() < 0 or images.max() > 1:
        raise DataSourceError(
            f"{origin}: float pixels must lie in [0, 1]; store integers 0..255 or scale them first"
        )
    return images.astype(np.float32)


def _checked_labels(labels: np.ndarray, origin: str) -> np.ndarray:
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)):
            raise DataSourceError(f"{origin}: labels must be whole numbers")
    elif not np.issubdtype(labels.dtype, np.integer):
        raise DataSourceError(f"{origin}: labels have dtype {labels.dtype}; expected integers")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataSourceError(
            f"{origin}: labels range {labels.min()}..{labels.max()}; expected 0..{NUM_CLASSES - 1}"
        )
    return labels.astype(np.int64)


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
    raw: dict[str, RawSplit], spec: SplitSpec
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Normalise the raw splits and produce train, validation and test sets.

    One split (`all`) is split three ways; train + test keep the test set and carve validation out
    of train (`validation_fraction` of it); train + validation + test are kept as they are.
    """
    normalised = {name: normalise_split(split) for name, split in raw.items()}
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
    for name, (_, labels) in result.items():
        missing = sorted(set(range(NUM_CLASSES)) - set(np.unique(labels).tolist()))
        if missing:
            raise DataSourceError(
                f"{origins}: the {name} split has no examples of class "
                f"{', '.join(map(str, missing))}; "
                "every split needs every class (more data, or other split fractions)"
            )
    return result


def class_counts(labels: np.ndarray) -> list[int]:
    """Number of examples of each class 0..NUM_CLASSES-1."""
    return np.bincount(labels, minlength=NUM_CLASSES).tolist()


def write_split(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one split as Parquet: `image` (fixed-size list of float32 pixels) and `label` (int64)."""
    height, width = images.shape[1:]
    pixels = pa.FixedSizeListArray.from_arrays(
        pa.array(images.reshape(-1), type=pa.float32()), height * width
    )
    table = pa.table({IMAGE_COLUMN: pixels, LABEL_COLUMN: pa.array(labels, type=pa.int64())})
    table = table.replace_schema_metadata({IMAGE_SHAPE_METADATA_KEY: f"{height},{width}"})
    pq.write_table(table, path)


def read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a split that `write_split` wrote, as float32 images (N, H, W) and int64 labels."""
    split = read_parquet_split(path)
    return split.images.astype(np.float32, copy=False), split.labels.astype(np.int64, copy=False)


def sha256_of_files(paths: list[Path]) -> str:
    """One sha256 over the names and contents of `paths`, in order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def sha256_of_arrays(raw: dict[str, RawSplit]) -> str:
    """One sha256 over the split names, shapes, dtypes and bytes of in-memory arrays."""
    digest = hashlib.sha256()
    for name in sorted(raw):
        for array in (raw[name].images, raw[name].labels):
            digest.update(f"{name}{array.shape}{array.dtype}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
