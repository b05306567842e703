"""Training progress as a Prefect progress artifact."""

from __future__ import annotations

import keras


class ProgressArtifact(keras.callbacks.Callback):
    """Training progress as a Prefect progress artifact, updated at the end of every epoch.
    Create it inside a Prefect task run."""

    def __init__(self, key: str, epochs: int, description: str) -> None:
        from prefect.artifacts import create_progress_artifact

        super().__init__()
        self.epochs = epochs
        self.artifact_id = create_progress_artifact(0.0, key=key, description=description)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self.artifact_id, progress=100.0 * (epoch + 1) / self.epochs)
