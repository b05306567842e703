"""The one typed configuration a training run takes, from the CLI and from deployments alike."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainflow.contract import PixelRange
from trainflow.datasets import DATASET_HELP, DataSource, PreparationSpec, parse_image_size
from trainflow.recipe import MODEL_HELP, ModelRecipe, OptimizerName, checked_model
from trainflow.sizes import parse_size

DataInput = Literal["auto", "memory", "stream"]
Distribute = Literal["none", "mirrored"]
# How much test accuracy a challenger may lose against the champion and still be promoted.
DEFAULT_TOLERANCE = 0.005

# Below this, a window of row groups would hold a few batches only.
MINIMUM_MEMORY_BUDGET = 8 * 2**20

# Run names become directory names: keep them to characters every file system accepts.
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RunConfig(BaseModel):
    """Everything one training run needs; paths derive from `artifacts` and `run_name` (see paths.py)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("mnist", description=f"Data source: {DATASET_HELP}")
    model: str = Field("mlp", description=f"The model: {MODEL_HELP}")
    optimizer: OptimizerName = Field(
        "adam", description="Optimizer for a model its builder leaves uncompiled"
    )
    learning_rate: float | None = Field(
        None,
        gt=0,
        le=10,
        description="Learning rate of that optimizer",
        json_schema_extra={"default_help": "the optimizer's own"},
    )
    pixels: PixelRange | None = Field(
        None,
        description="Pixels fed to the model: unit ([0, 1]) or raw (the source's values, 0..255)",
        json_schema_extra={"default_help": "raw if the model rescales its input itself, else unit"},
    )
    num_classes: int | None = Field(
        None,
        ge=2,
        le=100_000,
        description="Number of classes, for data in which a split lacks a class by design",
        json_schema_extra={"default_help": "the largest label + 1"},
    )
    image_size: str | None = Field(
        None,
        description="Resize every image to HEIGHT,WIDTH (images: sources)",
        json_schema_extra={"default_help": "keep the size; all images must have the same"},
    )
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
    memory_budget: str = Field(
        "1GiB",
        description="Memory the training data may take: beyond it, the prepared data is streamed "
        "from disk in row groups (such as 512MiB, 2GiB)",
    )
    data_input: DataInput = Field(
        "auto",
        description="How training reads the prepared data: memory (all of it), stream (row groups "
        "within --memory-budget), or auto (memory when the data fits in the budget)",
    )
    run_name: str | None = Field(
        None,
        description="Run directory name; running a name again resumes it",
        json_schema_extra={"default_help": "a new unique name"},
    )
    artifacts: str = Field(
        "artifacts",
        min_length=1,
        description="Where all outputs go: a directory, or an object store URL (s3://BUCKET/PREFIX)",
    )
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
    distribute: Distribute = Field(
        "none",
        description="mirrored: train data-parallel over this machine's devices (MirroredStrategy)",
    )
    devices: int | None = Field(
        None,
        ge=2,
        le=64,
        description="Devices --distribute mirrored trains over",
        json_schema_extra={"default_help": "every GPU, else 2 logical CPU devices"},
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes training data-parallel (MultiWorkerMirroredStrategy)",
    )
    ray: str | None = Field(
        None,
        description="Ray cluster (host:port of its head) to run the --workers on, as Ray actors",
        json_schema_extra={"default_help": "$RAY_ADDRESS, else processes of this machine"},
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

    mlflow: str | None = Field(
        None,
        description="MLflow tracking server to log the run to (such as http://127.0.0.1:5000)",
        json_schema_extra={"default_help": "$MLFLOW_TRACKING_URI, else no tracking"},
    )
    experiment: str = Field(
        "trainflow", min_length=1, description="MLflow experiment of the run, when tracked"
    )
    registered_model: str | None = Field(
        None,
        min_length=1,
        description="MLflow registered model that retraining registers each challenger under",
        json_schema_extra={"default_help": "the experiment's name"},
    )

    @field_validator("artifacts", mode="before")
    @classmethod
    def _artifacts_is_a_directory_or_a_url(cls, value: object) -> object:
        # A path is kept as text: `Path("s3://b/x")` would turn a URL into the local `s3:/b/x`.
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("dataset")
    @classmethod
    def _dataset_is_a_known_source(cls, value: str) -> str:
        DataSource.parse(value)
        return value

    @field_validator("model")
    @classmethod
    def _model_is_built_in_or_a_builder(cls, value: str) -> str:
        return checked_model(value)

    @field_validator("image_size")
    @classmethod
    def _image_size_is_height_comma_width(cls, value: str | None) -> str | None:
        return None if value is None else "{},{}".format(*parse_image_size(value))

    @field_validator("memory_budget")
    @classmethod
    def _memory_budget_is_a_size(cls, value: str) -> str:
        if parse_size(value) < MINIMUM_MEMORY_BUDGET:
            raise ValueError(f"memory budget {value!r} is below the minimum of 8MiB")
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

    @model_validator(mode="after")
    def _one_way_to_distribute(self) -> RunConfig:
        if self.workers > 1 and self.distribute != "none":
            raise ValueError("--workers and --distribute mirrored do not combine: pass one of them")
        if self.devices is not None and self.distribute != "mirrored":
            raise ValueError("--devices needs --distribute mirrored")
        if self.ray is not None and not self.distributed:
            raise ValueError("--ray needs --workers N (or --distribute mirrored)")
        return self

    @property
    def distributed(self) -> bool:
        """Whether the run trains under a tf.distribute strategy, in processes of its own."""
        return self.workers > 1 or self.distribute != "none"

    @property
    def ray_address(self) -> str | None:
        """The Ray cluster the workers run on: `ray`, else the environment's RAY_ADDRESS (the
        worker's, for a deployment run); None: local processes."""
        if not self.distributed:
            return None
        return self.ray or os.environ.get("RAY_ADDRESS") or None

    @property
    def source(self) -> DataSource:
        """The parsed `dataset` field."""
        return DataSource.parse(self.dataset)

    @property
    def preparation(self) -> PreparationSpec:
        """How the source is prepared, which together with the source identifies the data."""
        return PreparationSpec(
            validation_fraction=self.validation_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
            image_size=None if self.image_size is None else parse_image_size(self.image_size),
            num_classes=self.num_classes,
        )

    @property
    def tracking_uri(self) -> str | None:
        """The MLflow tracking server the run logs to: `mlflow`, else the environment's
        MLFLOW_TRACKING_URI (the worker's, for a deployment run); None: not tracked."""
        return self.mlflow or os.environ.get("MLFLOW_TRACKING_URI") or None

    @property
    def registered_model_name(self) -> str:
        """The MLflow registered model of retraining: `registered_model`, else the experiment's
        name."""
        return self.registered_model or self.experiment

    @property
    def memory_budget_bytes(self) -> int:
        """`memory_budget` in bytes."""
        return parse_size(self.memory_budget)

    @property
    def recipe(self) -> ModelRecipe:
        """How the model is built and compiled."""
        return ModelRecipe(
            model=self.model, optimizer=self.optimizer, learning_rate=self.learning_rate
        )
