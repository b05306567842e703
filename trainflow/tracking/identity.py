"""Which MLflow run a trainflow run logs to (no MLflow import: the stages pass it along)."""

from __future__ import annotations

from pydantic import BaseModel


class TrackedRun(BaseModel):
    """The MLflow run of a trainflow run, on the tracking server at `uri`."""

    uri: str
    experiment_id: str
    run_id: str

    @property
    def url(self) -> str | None:
        """The run's page in the MLflow UI, for a tracking server a browser can open."""
        if not self.uri.startswith(("http://", "https://")):
            return None
        return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
