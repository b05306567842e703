"""What each stage returns and the next one takes: the results passed along a run, declared once.

Plain pydantic models of numbers and paths (never Keras objects), so Prefect can pass and persist
them, and stages never need to import each other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, model_validator

from trainflow.checkpoints.state import DataOrder, ResumePoint
from trainflow.contract import ModelContract, PixelRange
from trainflow.paths import DataPaths
from trainflow.recipe import ModelRecipe
from trainflow.reports.metrics import (
    ClassificationReport,
)

# A file's location as a user names it: a path, or a URL in an object store (kept as text, since
# `Path("s3://b/x")` would make it the local `s3:/b/x`).
Location = Annotated[
    str,
    BeforeValidator(lambda value: os.fspath(value) if isinstance(value, os.PathLike) else value),
]


class PreparedData(BaseModel):
    """Where the prepared splits are and what they hold."""

    paths: DataPaths
    fingerprint: str
    source: str
    source_sha256: str
    image_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]
    rows: dict[str, int]
    reused: bool


class Distribution(BaseModel):
    """How training was spread: the strategy, its processes and replicas (devices training in
    step), and the batches: `global_batch` rows a step, `per_replica_batch` on each replica (the
    last batch of an epoch may be smaller)."""

    strategy: Literal["none", "mirrored", "multi_worker_mirrored"] = "none"
    workers: int = 1
    replicas: int = 1
    global_batch: int | None = None  # results written before distribution was recorded
    per_replica_batch: int | None = None


class TrainingResult(BaseModel):
    """What training produced: numbers and paths, never Keras objects."""

    recipe: ModelRecipe
    image_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]
    data_fingerprint: str
    epochs_completed: int
    resumed_from: int | None
    resumed_from_step: int | None
    stopped_early: bool
    best_epoch: int
    best_checkpoint: str  # its key in the artifacts' storage: the same on every machine
    best_checkpoint_sha256: str | None
    optimizer_iterations: int
    history: dict[str, list[float]]
    epoch_ends_ms: list[int] = []  # when each epoch of `history` ended
    steps_per_epoch: int
    resumes: list[ResumePoint]
    # Results of runs before the contract was recorded: softmax probabilities, pixels in [0, 1].
    contract: ModelContract = ModelContract()
    # How the epochs ordered the examples; results of runs before streaming: in memory.
    data_order: DataOrder = DataOrder()
    distribution: Distribution = Distribution()

    @model_validator(mode="before")
    @classmethod
    def _from_before_recipes(cls, data: Any) -> Any:
        """A `training.json` written before models had recipes and classes had names: its
        built-in `model_kind`, and the class numbers as names."""
        if isinstance(data, dict) and "model_kind" in data and "recipe" not in data:
            data = dict(data)
            data["recipe"] = {"model": data.pop("model_kind")}
            data.setdefault("class_names", [str(label) for label in range(data["num_classes"])])
        if isinstance(data, dict) and str(data.get("best_checkpoint", "")).startswith("/"):
            # Written when results named files by their local path: the key is the part from
            # the run directory on, e.g. `runs/<name>/checkpoints/best/save_model_03.weights.h5`.
            _, _, tail = str(data["best_checkpoint"]).rpartition("/runs/")
            data = {**data, "best_checkpoint": f"runs/{tail}"}
        return data

    @property
    def model_identity(self) -> dict:
        """What identifies the trained model, however training got there (resumed or not)."""
        return self.model_dump(
            mode="json", exclude={"resumed_from", "resumed_from_step", "resumes"}
        )


class PersistedModel(BaseModel):
    """The saved forms of one trained model."""

    keras_model: Path
    saved_model: Path
    weights: Path
    metadata: Path | None = None


class ModelMetadata(BaseModel):
    """What a saved model does not say itself (`model/model.json`, and
    `saved_model/assets.extra/trainflow.json`): the pixels to feed it, what its outputs are, and
    its classes. The SavedModel's `serve` takes float32 pixels in `contract.pixels`' range and
    returns class probabilities; the `.keras` model returns its own outputs (`contract.outputs`)."""

    model: str
    image_shape: tuple[int, ...]
    class_names: list[str]
    contract: ModelContract


class Evaluation(BaseModel):
    """Test-set metrics of the saved model, as written to `evaluation.json`.

    `loss` and `accuracy` are those of `load_model(keras_model)`; `weights_model_loss` is the loss of
    a freshly built model with `weights` loaded, which must agree.
    """

    loss: float
    accuracy: float
    per_class_accuracy: list[float]
    num_examples: int
    report: ClassificationReport
    predictions: Path
    keras_model: Path
    weights: Path
    weights_model_loss: float
    path: Path


class RunReport(BaseModel):
    """The report's files."""

    history_table: Path
    per_class_table: Path
    confusion_table: Path
    predictions_table: Path
    learning_curves: Path
    confusion_matrix: Path
    confident_mistakes: Path


class RunSummary(BaseModel):
    """What a finished run reports (`trainflow run --json` prints it).

    `resumed_from` counts the epochs already done when training last resumed, and
    `resumed_from_step` the global steps; both are None for a run that never resumed.
    """

    run_name: str
    # Where the files are, as a user names them: paths, or URLs in an object store.
    run_dir: Location
    model_path: Location
    weights_path: Location
    saved_model_path: Location
    evaluation_path: Location
    reports_dir: Location
    data_fingerprint: str
    model: str
    class_names: list[str]
    pixels: PixelRange
    data_input: Literal["memory", "stream"] = "memory"  # how training read the prepared data
    distribution: Distribution = Distribution()
    test_accuracy: float
    test_loss: float
    macro_f1: float
    epochs_completed: int
    best_epoch: int
    stopped_early: bool
    resumed_from: int | None
    resumed_from_step: int | None
    # The flow run's page in the Prefect UI; None when its server did not outlive the run.
    flow_run_url: str | None = None
    # The run's page in the MLflow UI, when it is tracked.
    mlflow_run_url: str | None = None


class PromotionDecision(BaseModel):
    """Whether the challenger became the champion, and why."""

    run_name: str
    promoted: bool
    reason: str
    challenger_accuracy: float
    champion_run: str | None
    champion_accuracy: float | None
    tolerance: float
