"""The model registry under `artifacts/registry/`: every registered version and the champion.

`versions.json` lists every version (run, metrics, data fingerprint, parameters, code version,
decision); `champion.json` points at the champion's run and remembers the earlier champions for
`rollback`. Both are replaced atomically, and every change holds `registry.lock`, so concurrent
promotions are serialised: the storage's lock (`Storage.lock`), an flock under a local root and a
fenced lease in the store under a root in an object store, so that promotions from several
machines are serialised too.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

import trainflow
from trainflow.errors import UserInputError
from trainflow.paths import ArtifactPaths
from trainflow.results import Location


class ModelVersion(BaseModel):
    """One trained model as the registry records it."""

    run_name: str
    decision: Literal["promoted", "rejected"]
    reason: str
    test_accuracy: float
    test_loss: float
    data_fingerprint: str
    # Where the run's files are, as a user names them: paths, or URLs in an object store.
    model_path: Location
    weights_path: Location
    saved_model_path: Location
    parameters: dict[str, Any]
    code_version: str
    registered_at: str


class Champion(BaseModel):
    """The champion pointer: the current champion's run and the ones before it, newest last."""

    run_name: str
    previous: list[str] = []
    changed_at: str


def code_version(repository: Path = Path(__file__).resolve().parents[1]) -> str:
    """The git commit of the code, or the package version outside a git checkout."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(repository), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return f"trainflow {trainflow.__version__}"
    return completed.stdout.strip()


class Registry:
    """Read and change the registry of one artifacts root."""

    def __init__(self, artifacts: ArtifactPaths) -> None:
        self.storage = artifacts.storage
        self.root = artifacts.root / "registry"
        self.versions_file = self.root / "versions.json"
        self.champion_file = self.root / "champion.json"
        self.refresh()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry's lock (blocking until other writers are done), with the registry
        as the last writer left it."""
        with self.storage.locked(self.root / "registry.lock", guarding=self.root):
            self.refresh()
            yield

    def refresh(self) -> None:
        """Read the registry again from the object store, if it is in one."""
        for path in (self.versions_file, self.champion_file):
            self.storage.local_copy(path)

    def versions(self) -> list[ModelVersion]:
        if not self.versions_file.is_file():
            return []
        return [
            ModelVersion.model_validate(item) for item in json.loads(self.versions_file.read_text())
        ]

    def champion(self) -> Champion | None:
        if not self.champion_file.is_file():
            return None
        return Champion.model_validate_json(self.champion_file.read_text())

    def version(self, run_name: str) -> ModelVersion:
        """The newest registered version of `run_name`."""
        for version in reversed(self.versions()):
            if version.run_name == run_name:
                return version
        raise UserInputError(
            f"run {run_name!r} is not in the model registry {self.versions_file}; "
            "`trainflow models` lists the registered runs"
        )

    def champion_version(self) -> ModelVersion | None:
        champion = self.champion()
        return None if champion is None else self.version(champion.run_name)

    def register(self, version: ModelVersion) -> None:
        """Append `version`; make it the champion when its decision is `promoted`. Call locked."""
        versions = [item.model_dump(mode="json") for item in self.versions()]
        self.storage.write_json(self.versions_file, [*versions, version.model_dump(mode="json")])
        if version.decision == "promoted":
            self._point_at(version.run_name)

    def promote(self, run_name: str) -> Champion:
        """Make the registered run `run_name` the champion, whatever its decision was."""
        with self.locked():
            self.version(run_name)
            return self._point_at(run_name)

    def rollback(self) -> Champion:
        """Make the previous champion the champion again."""
        with self.locked():
            champion = self.champion()
            if champion is None or not champion.previous:
                raise UserInputError(
                    f"there is no earlier champion to roll back to in {self.champion_file}"
                )
            pointer = Champion(
                run_name=champion.previous[-1], previous=champion.previous[:-1], changed_at=now()
            )
            self.storage.write_json(self.champion_file, pointer.model_dump())
            return pointer

    def _point_at(self, run_name: str) -> Champion:
        current = self.champion()
        previous = [] if current is None else [*current.previous, current.run_name]
        if current is not None and current.run_name == run_name:
            previous = current.previous
        pointer = Champion(run_name=run_name, previous=previous, changed_at=now())
        self.storage.write_json(self.champion_file, pointer.model_dump())
        return pointer


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
