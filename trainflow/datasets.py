"""The data a run names and how it is prepared: the `--dataset` source and the preparation
settings that, with the source's bytes, identify the prepared data."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainflow.storage.locations import is_url, local_path_of

SourceKind = Literal["mnist", "fashion_mnist", "idx", "npz", "parquet", "images"]

KERAS_SOURCES = ("mnist", "fashion_mnist")
FILE_SOURCES = ("idx", "npz", "parquet", "images")
DATASET_HELP = (
    "mnist, fashion_mnist, idx:DIR, npz:FILE, parquet:DIR or images:DIR (DIR and FILE may be "
    "s3:// or other fsspec URLs)"
)
IMAGE_SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*$")


class DataSource(BaseModel):
    """Where the images come from: a `keras.datasets` name, or a kind of file with its path or
    its object-store URL (`s3://bucket/prefix`, any fsspec URL). `location` is always local: the
    path given, or this process's copy of the URL, kept in step by `trainflow/data/remote.py`."""

    model_config = ConfigDict(frozen=True)

    kind: SourceKind
    location: Path | None = None
    url: str | None = None

    @classmethod
    def parse(cls, spec: str) -> DataSource:
        """Parse `mnist`, `fashion_mnist`, or `idx:`, `npz:`, `parquet:`, `images:` followed by a
        path or a URL."""
        kind, separator, location = spec.partition(":")
        if kind in KERAS_SOURCES and not separator:
            return cls(kind=kind)
        if kind in FILE_SOURCES and is_url(location) and location.split("://", 1)[1].strip("/"):
            return cls(kind=kind, url=location)
        if kind in FILE_SOURCES and location and not is_url(location):
            return cls(kind=kind, location=local_path_of(location))
        raise ValueError(f"dataset {spec!r} is not one of {DATASET_HELP}")

    @model_validator(mode="before")
    @classmethod
    def _a_url_is_read_from_a_local_copy(cls, data: Any) -> Any:
        # Recomputed at every validation (in another process too): the copy is this process's.
        if isinstance(data, dict):
            location = data.get("location")
            if isinstance(location, str) and is_url(location) and not data.get("url"):
                data = {**data, "url": location}
            if data.get("url") and data.get("kind") in FILE_SOURCES:
                data = {**data, "location": cls.local_copy(data["kind"], data["url"])}
        return data

    @staticmethod
    def local_copy(kind: str, url: str) -> Path:
        """Where this process keeps its copy of the `kind` source at `url`: a directory per source
        (the file inside it for npz, so that a `classes.json` beside it has its place)."""
        digest = hashlib.sha256(f"{kind}:{url}".encode()).hexdigest()[:16]
        root = Path(tempfile.gettempdir()) / f"trainflow-sources-{os.getpid()}" / digest
        return root / url.rstrip("/").rpartition("/")[2] if kind == "npz" else root

    def __str__(self) -> str:
        if self.url is not None:
            return f"{self.kind}:{self.url}"
        return self.kind if self.location is None else f"{self.kind}:{self.location}"


def parse_image_size(value: str) -> tuple[int, int]:
    """`"64,48"` -> (64, 48): height and width in pixels."""
    match = IMAGE_SIZE_PATTERN.match(value)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise ValueError(f"image size {value!r} is not HEIGHT,WIDTH in pixels, such as 64,64")
    return int(match[1]), int(match[2])


class PreparationSpec(BaseModel):
    """How a source becomes prepared data: its images resized (or not), its classes, and its split
    into train, validation and test sets (deterministic for a seed)."""

    model_config = ConfigDict(frozen=True)

    validation_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the training data held out for validation"
    )
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    image_size: tuple[int, int] | None = None
    num_classes: int | None = None

    def identity(self) -> dict:
        """What identifies the preparation (with the source's bytes): the settings given. Unset
        options are left out, so data prepared before they existed keeps its fingerprint."""
        return self.model_dump(exclude_none=True)
