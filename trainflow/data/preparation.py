"""The prepared-data cache: prepared splits live under `data/<fingerprint>`, keyed by the source's
sha256 and the split parameters, with a manifest that lets a later run verify and reuse them."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from trainflow.data.raw import RawSplit
from trainflow.data.split_writer import row_group_rows, write_splits
from trainflow.data.splitting import SplitPlan, class_counts
from trainflow.datasets import PreparationSpec
from trainflow.paths import ArtifactPaths, DataPaths
from trainflow.results import PreparedData
from trainflow.storage.digests import sha256_of_files, sha256_of_stream

logger = logging.getLogger("trainflow.prepare_data")

# Part of the fingerprint: bump it when the prepared files change meaning, so old ones are not
# reused, and say in PREPARED_FORMAT_CHANGES what the new version changed.
PREPARED_FORMAT_VERSION = 3


PREPARED_FORMAT_CHANGES = {
    2: "8-bit sources' pixels stay uint8; version 1 stored every pixel as float32 in [0, 1]",
    3: "images as fixed-size binary (read many times faster than a list of pixels), in row "
    "groups sized for streaming, written in chunks",
}


def data_fingerprint(
    source_sha256: str, preparation: PreparationSpec, version: int = PREPARED_FORMAT_VERSION
) -> str:
    """Identify prepared data by the source's bytes and how it was prepared (in format `version`)."""
    key = json.dumps(
        {
            "format": version,
            "source": source_sha256,
            "split": preparation.identity(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def fingerprints_of_the_same_rows(source_sha256: str, preparation: PreparationSpec) -> set[str]:
    """The fingerprints data prepared from this source in this way had in every format version.
    Only how the rows are stored changed between versions, never the rows, their order or the
    pixels a model is fed, so a run checkpointed on data of an older format resumes exactly."""
    return {
        data_fingerprint(source_sha256, preparation, version)
        for version in range(1, PREPARED_FORMAT_VERSION + 1)
    }


def report_older_format(
    artifacts: ArtifactPaths, source_sha256: str, preparation: PreparationSpec
) -> None:
    """Say so when data prepared from the same source in the same way, but in an older format,
    is under `artifacts`: it is not reused, and the user may wonder why."""
    for version in range(PREPARED_FORMAT_VERSION - 1, 0, -1):
        older = artifacts.data(data_fingerprint(source_sha256, preparation, version))
        older.storage.refresh(older.root, only=older.manifest.name)
        if older.manifest.is_file():
            changes = range(version + 1, PREPARED_FORMAT_VERSION + 1)
            logger.info(
                "Prepared data %s is of format version %d; preparing it again as version %d (%s)",
                older.location,
                version,
                PREPARED_FORMAT_VERSION,
                "; ".join(PREPARED_FORMAT_CHANGES[change] for change in changes),
            )
            return


def verified_prepared_data(paths: DataPaths) -> PreparedData | None:
    """The prepared data at `paths` if its manifest parses and every split file it lists has the
    recorded sha256; None when there is none, or it is damaged (with a warning). The splits are
    hashed as they are read where they lie (in an object store by ranged reads: only the manifest
    comes to the local face). Only checks: damaged data is replaced by the next preparation, never
    deleted here. An error reading a file is raised, not taken for damage (in a store, after a
    passing fault was retried)."""
    paths.storage.refresh(paths.root, only=paths.manifest.name)  # in a store: by any machine
    try:
        prepared = prepared_from_manifest(paths, reused=True)
        recorded = json.loads(paths.manifest.read_bytes())["splits"]
        expected = {name: entry["sha256"] for name, entry in recorded.items()}
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:  # ValidationError and JSON errors too
        logger.warning(
            "Prepared data %s has a damaged manifest (%s); preparing it again",
            paths.location,
            error,
        )
        return None
    for name, sha256 in expected.items():
        if _sha256_of_split(paths, name) != sha256:
            logger.warning(
                "Prepared data %s is damaged (%s); preparing it again", paths.location, name
            )
            return None
    return prepared


def _sha256_of_split(paths: DataPaths, name: str) -> str | None:
    """The digest of split `name` as its manifest records it; None when the file is missing."""
    split = paths.split(name)
    try:
        with paths.storage.open_for_reading(split) as stream:
            return sha256_of_stream(split.name, stream)
    except FileNotFoundError:
        return None


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
        # Data prepared before class names were recorded: the class numbers.
        class_names=manifest.get(
            "class_names", [str(label) for label in range(manifest["num_classes"])]
        ),
        rows={name: entry["rows"] for name, entry in manifest["splits"].items()},
        reused=reused,
    )


def write_prepared_data(
    paths: DataPaths,
    raw: dict[str, RawSplit],
    plan: SplitPlan,
    source: str,
    source_files: list[Path],
    source_sha256: str,
    preparation: PreparationSpec,
    class_names: list[str],
) -> PreparedData:
    """Write the splits that `plan` decides as Parquet under `paths`, streaming the raw splits'
    images once, with the manifest that describes and verifies them, all at once: the directory
    appears complete or not at all (and replaces a damaged one)."""
    with paths.storage.writing(paths.root) as staging:
        staging.mkdir()
        staged = DataPaths(root=staging)
        write_splits(raw, plan, staged)
        paths.storage.write_json(
            staged.manifest,
            {
                "format_version": PREPARED_FORMAT_VERSION,
                "fingerprint": paths.root.name,
                "source": source,
                "source_files": [str(path) for path in source_files],
                "source_sha256": source_sha256,
                "split": preparation.model_dump(),
                "image_shape": list(plan.image_shape),
                "num_classes": len(class_names),
                "class_names": class_names,
                "splits": {
                    name: {
                        "file": staged.split(name).name,
                        "rows": len(labels),
                        "row_group_rows": row_group_rows(plan.image_shape, plan.pixel_dtype),
                        "class_counts": class_counts(labels, len(class_names)),
                        "sha256": sha256_of_files([staged.split(name)]),
                    }
                    for name, labels in plan.labels.items()
                },
                "created_at": datetime.now(UTC).isoformat(),
            },
        )
    return prepared_from_manifest(paths, reused=False)


def sha256_of_arrays(raw: dict[str, RawSplit]) -> str:
    """One sha256 over the split names, shapes, dtypes and bytes of in-memory arrays."""
    digest = hashlib.sha256()
    for name in sorted(raw):
        for array in (raw[name].images, raw[name].labels):
            digest.update(f"{name}{array.shape}{array.dtype}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
