"""Stage 1: read a data source, validate and normalise it, split it, and store it as Parquet."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from prefect import task

from trainflow.config import DataSource, SplitSpec
from trainflow.data.preparation import (
    PREPARED_FORMAT_VERSION,
    data_fingerprint,
    manifest_is_complete,
    prepared_from_manifest,
)
from trainflow.data.prepared import sha256_of_arrays, write_split
from trainflow.data.sources import locate_source_files, read_source
from trainflow.data.splitting import class_counts, split_dataset
from trainflow.data.validation import NUM_CLASSES
from trainflow.orchestration.retry_policy import retry_unless_user_input_error
from trainflow.paths import PREPARED_SPLITS, ArtifactPaths, DataPaths
from trainflow.results import PreparedData
from trainflow.storage.atomic import atomic_path, write_json
from trainflow.storage.digests import sha256_of_files

logger = logging.getLogger("trainflow.prepare_data")


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


prepare_data_task = task(
    prepare_data,
    name="prepare_data",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_unless_user_input_error,
)
