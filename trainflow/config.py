"""The one typed configuration a training run takes, from the CLI and from deployments alike."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ModelKind = Literal["mlp", "cnn"]
SourceKind = Literal["mnist", "fashion_mnist", "idx", "npz", "parquet"]

KERAS_SOURCES = ("mnist", "fashion_mnist")
FILE_SOURCES = ("idx", "npz", "parquet")
DATASET_HELP = "mnist, fashion_mnist, idx:DIR, npz:FILE or parquet:DIR"

# Run names become directory names: keep them to characters every file system accepts.
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class DataSource(BaseModel):
    """Where the images come from: a `keras.datasets` name, or a kind of local file with its path."""

    model_config = ConfigDict(frozen=True)

    kind: SourceKind
    location: Path | None = None

    @classmethod
    def parse(cls, spec: str) -> DataSource:
        """Parse `mnist`, `fashion_mnist`, `idx:DIR`, `npz:FILE` or `parquet:DIR`."""
        kind, separator, location = spec.partition(":")
        if kind in KERAS_SOURCES and not separator:
            return cls(kind=kind)
        if kind in FILE_SOURCES and location:
            return cls(kind=kind, location=Path(location))
        raise ValueError(f"dataset {spec!r} is not one of {DATASET_HELP}")

    def __str__(self) -> str:
        return self.kind if self.location is None else f"{self.kind}:{self.location}"


class SplitSpec(BaseModel):
    """How a source is split into train, validation and test sets (deterministic for a seed)."""

    model_config = ConfigDict(frozen=True)

    validation_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the training data held out for validation"
    )
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(42, ge=0, le=2**32 - 1)


class RunConfig(BaseModel):
    """Everything one training run needs; paths derive from `artifacts` and `run_name` (see paths.py)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("mnist", description=f"Data source: {DATASET_HELP}")
    model: ModelKind = Field("mlp", description="Model architecture")
    epochs: int = Field(5, ge=1, le=10_000, description="Maximum number of training epochs")
    batch_size: int = Field(32, ge=1, le=65_536, description="Training batch size")
    patience: int = Field(
        3, ge=0, le=10_000, description="EarlyStopping patience, in epochs without val_loss gain"
    )
    seed: int = Field(
        42,
        ge=0,
        le=2**32 - 1,
        description="Seed for the data split, the epochs' data order and training",
    )
    validation_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the training data held out for validation"
    )
    test_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the data held out for testing (single-split sources)",
    )
    run_name: str | None = Field(
        None,
        description="Run directory name; running a name again resumes it",
        json_schema_extra={"default_help": "a new unique name"},
    )
    artifacts: Path = Field(Path("artifacts"), description="Root directory of all outputs")
    fresh: bool = Field(
        False, description="Discard the run's checkpoints and outputs and start from epoch 0"
    )
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="Also checkpoint every N training steps, not only at the end of each epoch",
    )
    keep_checkpoints: int = Field(
        3, ge=1, le=1000, description="How many of the newest resume checkpoints to keep"
    )
    deterministic: bool = Field(
        False,
        description="Deterministic ops, so a resumed run ends with the same weights as an uninterrupted one",
    )
    fail_at_epoch: int | None = Field(
        None,
        ge=1,
        description="Raise right after this epoch (1-based) is checkpointed, once, to demo retry and resume",
    )
    kill_at_step: int | None = Field(
        None,
        ge=1,
        description="SIGKILL the training process right after this global step, once, to demo "
        "crash recovery",
    )

    @field_validator("dataset")
    @classmethod
    def _dataset_is_a_known_source(cls, value: str) -> str:
        DataSource.parse(value)
        return value

    @field_validator("run_name")
    @classmethod
    def _run_name_is_a_safe_directory_name(cls, value: str | None) -> str | None:
        if value is not None and (not RUN_NAME_PATTERN.match(value) or ".." in value):
            raise ValueError(
                f"run name {value!r} must start with a letter or digit and use only letters, "
                "digits, '.', '_' and '-' (at most 100 characters, no '..')"
            )
        return value

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> RunConfig:
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError(
                "validation_fraction + test_fraction must be below 1 so that training data remains"
            )
        return self

    @property
    def source(self) -> DataSource:
        """The parsed `dataset` field."""
        return DataSource.parse(self.dataset)

    @property
    def split(self) -> SplitSpec:
        """The split parameters, which together with the source identify the prepared data."""
        return SplitSpec(
            validation_fraction=self.validation_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
        )
