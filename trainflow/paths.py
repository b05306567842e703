"""Every output path, computed in one place from the artifacts root.

The paths are the local faces of the artifacts' keys (see storage/artifacts.py): for a root in an
object store they are in this process's scratch standing for it. Each paths object carries the
`Storage` its files are read and written through (`paths.storage`), and `location` turns a path
into what a user is shown (a path, or a URL).

Layout under the root:

    data/<fingerprint>/{train,validation,test}.parquet, manifest.json   prepared data, shared by runs
    runs/<run name>/run.json                                            status, config and metrics
    runs/<run name>/checkpoints/best/save_model_<epoch>.weights.h5      ModelCheckpoint (best val_loss)
    runs/<run name>/checkpoints/resume/step-<step>.{weights.h5,json}    resume checkpoints
    runs/<run name>/checkpoints/quarantine/                             invalid files set aside
    runs/<run name>/training.json                                       result of finished training
    runs/<run name>/stages/<stage>.json                                 finished post-training stages
    runs/<run name>/model/model.{weights.h5,keras}, model/saved_model/  persisted model
    runs/<run name>/evaluation.json                                     evaluation of the saved model
    runs/<run name>/reports/*.parquet, *.png                            metrics tables and pictures
    runs/<run name>/tensorboard/                                        TensorBoard logs
    locks/<run name>.lock                                               held while the run runs
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from trainflow.storage.artifacts import Storage

PREPARED_SPLITS = ("train", "validation", "test")
RECORD_FILE = "run.json"


class DataPaths(BaseModel):
    """Files of one prepared dataset."""

    model_config = ConfigDict(frozen=True)

    root: Path

    @property
    def storage(self) -> Storage:
        return Storage.of_root(self.root.parent.parent)

    def split(self, name: str) -> Path:
        """The Parquet file of split `name` (train, validation or test)."""
        return self.root / f"{name}.parquet"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def location(self) -> str:
        """The directory as a user names it: its store URL, or the path."""
        return self.storage.location(self.root)


class RunPaths(BaseModel):
    """Files of one run."""

    model_config = ConfigDict(frozen=True)

    run_dir: Path

    @property
    def storage(self) -> Storage:
        return Storage.of_root(self.run_dir.parent.parent)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def location(self) -> str:
        """The run directory as a user names it: its store URL, or the directory."""
        return self.storage.location(self.run_dir)

    @property
    def record(self) -> Path:
        return self.run_dir / RECORD_FILE

    @property
    def lock(self) -> Path:
        """Held while the run runs: `<root>/locks/<name>.lock`, outside the run directory, which
        --fresh removes."""
        return self.run_dir.parent.parent / "locks" / f"{self.name}.lock"

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def best_checkpoints_dir(self) -> Path:
        return self.checkpoints_dir / "best"

    @property
    def best_checkpoint_pattern(self) -> Path:
        """`ModelCheckpoint`'s file pattern; Keras fills in the 1-based epoch."""
        return self.best_checkpoints_dir / "save_model_{epoch:02d}.weights.h5"

    @property
    def resume_dir(self) -> Path:
        return self.checkpoints_dir / "resume"

    @property
    def quarantine_dir(self) -> Path:
        return self.checkpoints_dir / "quarantine"

    def kill_marker(self, step: int) -> Path:
        """Records that `--kill-at-step step` has killed this run once already."""
        return self.run_dir / f"killed-at-step-{step}.json"

    @property
    def stages_dir(self) -> Path:
        return self.run_dir / "stages"

    def stage_record(self, stage: str) -> Path:
        """Records that a post-training stage finished (see stages.py)."""
        return self.stages_dir / f"{stage}.json"

    @property
    def training_result(self) -> Path:
        return self.run_dir / "training.json"

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    @property
    def weights(self) -> Path:
        return self.model_dir / "model.weights.h5"

    @property
    def keras_model(self) -> Path:
        return self.model_dir / "model.keras"

    @property
    def saved_model(self) -> Path:
        return self.model_dir / "saved_model"

    @property
    def model_metadata(self) -> Path:
        """How to feed the saved model and read its outputs (`ModelMetadata`)."""
        return self.model_dir / "model.json"

    @property
    def evaluation(self) -> Path:
        return self.run_dir / "evaluation.json"

    @property
    def reports_dir(self) -> Path:
        return self.run_dir / "reports"

    @property
    def predictions_table(self) -> Path:
        return self.reports_dir / "predictions.parquet"

    @property
    def per_class_table(self) -> Path:
        return self.reports_dir / "per_class_metrics.parquet"

    @property
    def confusion_table(self) -> Path:
        return self.reports_dir / "confusion_matrix.parquet"

    @property
    def history_table(self) -> Path:
        return self.reports_dir / "history.parquet"

    @property
    def learning_curves_image(self) -> Path:
        return self.reports_dir / "learning_curves.png"

    @property
    def confusion_image(self) -> Path:
        return self.reports_dir / "confusion_matrix.png"

    @property
    def mistakes_image(self) -> Path:
        return self.reports_dir / "confident_mistakes.png"

    @property
    def tensorboard_dir(self) -> Path:
        return self.run_dir / "tensorboard"


class ArtifactPaths(BaseModel):
    """The artifacts root, from which data and run paths derive."""

    model_config = ConfigDict(frozen=True)

    root: Path

    @classmethod
    def at(cls, location: str | Path) -> ArtifactPaths:
        """The artifacts at `location`: a directory or an object store URL (`Storage.at`)."""
        return cls(root=Storage.at(location).root)

    @property
    def storage(self) -> Storage:
        return Storage.of_root(self.root)

    @property
    def location(self) -> str:
        """The root as a user names it: the store URL, or the directory."""
        return self.storage.location(self.root)

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def data(self, fingerprint: str) -> DataPaths:
        return DataPaths(root=self.root / "data" / fingerprint)

    def run(self, run_name: str) -> RunPaths:
        return RunPaths(run_dir=self.runs_dir / run_name)
