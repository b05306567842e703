"""Stage 1: read a data source, validate and normalise it, split it, and store it as Parquet."""

from __future__ import annotations

import logging

from prefect import task

from trainflow.config import DataSource, SplitSpec
from trainflow.data.preparation import (
    data_fingerprint,
    verified_prepared_data,
    write_prepared_data,
)
from trainflow.data.prepared import sha256_of_arrays
from trainflow.data.sources import locate_source_files, read_source
from trainflow.data.splitting import split_dataset
from trainflow.orchestration.retry_policy import RETRY_TRANSIENT_FAULTS
from trainflow.paths import ArtifactPaths
from trainflow.results import PreparedData
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
    reused = verified_prepared_data(paths)
    if reused is not None:
        logger.info(
            "Reusing prepared data %s for %s (same source sha256 and split)", paths.root, source
        )
        return reused
    splits = split_dataset(raw if raw is not None else read_source(source, files), split)
    prepared = write_prepared_data(
        paths,
        splits,
        source=str(source),
        source_files=files,
        source_sha256=source_sha256,
        split=split,
    )
    logger.info("Prepared %s into %s: %s", source, paths.root, prepared.rows)
    return prepared


prepare_data_task = task(prepare_data, name="prepare_data", retries=2, **RETRY_TRANSIENT_FAULTS)
