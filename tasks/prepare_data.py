"""Stage 1: read a data source, validate and normalise it, split it, and store it as Parquet, a
chunk at a time: memory for a chunk and the labels, not for the dataset."""

from __future__ import annotations

import logging

from prefect import task

from trainflow.data.classes import class_names
from trainflow.data.preparation import (
    data_fingerprint,
    report_older_format,
    sha256_of_arrays,
    verified_prepared_data,
    write_prepared_data,
)
from trainflow.data.sources import locate_source_files, read_source, source_sha256
from trainflow.data.splitting import number_of_classes, plan_splits
from trainflow.datasets import DataSource, PreparationSpec
from trainflow.orchestration.retry_policy import RETRY_TRANSIENT_FAULTS
from trainflow.paths import ArtifactPaths
from trainflow.results import PreparedData

logger = logging.getLogger("trainflow.prepare_data")


def prepare_data(
    source: DataSource, preparation: PreparationSpec, artifacts: ArtifactPaths
) -> PreparedData:
    """Prepare `source` under `artifacts`, or reuse what an earlier run prepared from the same
    source bytes in the same way.

    Files are hashed before they are parsed, so reuse costs one read of the source; a
    `keras.datasets` source is loaded (from Keras's cache) and its arrays hashed.
    """
    files = locate_source_files(source)
    raw = None if files else read_source(source, files)
    digest = source_sha256(source, files) if raw is None else sha256_of_arrays(raw)
    paths = artifacts.data(data_fingerprint(digest, preparation))
    reused = verified_prepared_data(paths)
    if reused is not None:
        logger.info(
            "Reusing prepared data %s for %s (same source sha256 and preparation)",
            paths.location,
            source,
        )
        return reused
    report_older_format(artifacts, digest, preparation)
    if raw is None:
        raw = read_source(source, files, preparation.image_size)
    plan = plan_splits(raw, preparation)
    prepared = write_prepared_data(
        paths,
        raw,
        plan,
        source=str(source),
        source_files=files,
        source_sha256=digest,
        preparation=preparation,
        class_names=class_names(source, number_of_classes(plan.labels, preparation)),
    )
    logger.info("Prepared %s into %s: %s", source, paths.location, prepared.rows)
    return prepared


prepare_data_task = task(prepare_data, name="prepare_data", retries=2, **RETRY_TRANSIENT_FAULTS)
