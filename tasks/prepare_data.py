"""Stage 1: read a data source, validate and normalise it, split it, and store it as Parquet."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from datetime import UTC, datetime

from prefect import task
from pydantic import BaseModel

from tasks.retry_policy import retry_unless_user_input_error
from trainflow.atomic import atomic_path, write_json
from trainflow.config import DataSource, SplitSpec
from trainflow.dataset import (
    NUM_CLASSES,
    class_counts,
    sha256_of_arrays,
    sha256_of_files,
    split_dataset,
    write_split,
)
from trainflow.paths import PREPARED_SPLITS, ArtifactPaths, DataPaths
from trainflow.sources import locate_source_files, read_source

logger = logging.getLogger("trainflow.prepare_data")

# Part of the fingerprint: bump it when the prepared files change meaning, so old ones are not reused.
PREPARED_FORMAT_VERSION = 1


class PreparedData(BaseModel):
    """Where the prepared splits are and what they hold."""

    paths: DataPaths
    fingerprint: str
    source: str
    source_sha256: str
    image_shape: tuple[int, int]
    num_classes: int
    rows: dict[str, int]
    reused: bool


def prepare_data(source: DataSource, split: SplitSpec, artifacts: ArtifactPaths) -> PreparedData:
    """Prepare `source` under `artifacts`, or reuse what an earlier run prepared from the same
    source bytes with the same split parameters.

    Files are hashed before they are parsed, so reuse costs one read of the source; a
    `keras.datasets` source is loaded (from Keras's cache) and its arrays hashed.
    """
    files = locate_source_files(source)
    raw = None if files else read_source(source, files)
    source_sha256 = sha256_of_files(files) if raw is None else sha256_of_arrays(raw)
    fingerprint = data_fingerprint(source_sha256, split)
    paths = artifacts.data(fingerprint)
    if manifest_is_complete(paths):
        logger.info(
            "Reusing prepared data %s for %s (same source sha256 and split)", paths.root, source
        )
        return prepared_from_manifest(paths, reused=True)

    splits = split_dataset(raw if raw is not None else read_source(source, files), split)
    with atomic_path(paths.root) as staging:
        staging.mkdir()
        staged = DataPaths(root=staging)
        for name in PREPARED_SPLITS:
            write_split(staged.split(name), *splits[name])
        write_json(
            staged.manifest,
            {
                "format_version": PREPARED_FORMAT_VERSION,
                "fingerprint": fingerprint,
                "source": str(source),
                "source_files": [str(path) for path in files],
                "source_sha256": source_sha256,
                "split": split.model_dump(),
                "image_shape": list(splits["train"][0].shape[1:]),
                "num_classes": NUM_CLASSES,
                "splits": {
                    name: {
                        "file": staged.split(name).name,
                        "rows": len(labels),
                        "class_counts": class_counts(labels),
                        "sha256": sha256_of_files([staged.split(name)]),
                    }
                    for name, (_, labels) in splits.items()
                },
                "created_at": datetime.now(UTC).isoformat(),
            },
        )
    prepared = prepared_from_manifest(paths, reused=False)
    logger.info("Prepared %s into %s: %s", source, paths.root, prepared.rows)
    return prepared


def data_fingerprint(source_sha256: str, split: SplitSpec) -> str:
    """Identify prepared data by the source's bytes and the split parameters."""
    key = json.dumps(
        {"format": PREPARED_FORMAT_VERSION, "source": source_sha256, "split": split.model_dump()},
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def manifest_is_complete(paths: DataPaths) -> bool:
    """True when the manifest exists and every split file it lists has the recorded sha256."""
    if not paths.manifest.is_file():
        return False
    manifest = json.loads(paths.manifest.read_text())
    for name, entry in manifest["splits"].items():
        split_path = paths.split(name)
        if not split_path.is_file() or sha256_of_files([split_path]) != entry["sha256"]:
            logger.warning("Prepared data %s is damaged (%s); preparing it again", paths.root, name)
            shutil.rmtree(paths.root)
            return False
    return True


def prepared_from_manifest(paths: DataPaths, reused: bool) -> PreparedData:
    """Describe the prepared data that `paths.manifest` records."""
    manifest = json.loads(paths.manifest.read_text())
    return PreparedData(
        paths=paths,
        fingerprint=manifest["fingerprint"],
        source=manifest["source"],
        source_sha256=manifest["source_sha256"],
        image_shape=tuple(manifest["image_shape"]),
        num_classes=manifest["num_classes"],
        rows={name: entry["rows"] for name, entry in manifest["splits"].items()},
        reused=reused,
    )


prepare_data_task = task(
    prepare_data,
    name="prepare_data",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_unless_user_input_error,
)
