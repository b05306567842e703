"""The prepared-data cache: prepared splits live under `data/<fingerprint>`, keyed by the source's
sha256 and the split parameters, with a manifest that lets a later run verify and reuse them."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil

from trainflow.config import SplitSpec
from trainflow.paths import DataPaths
from trainflow.results import PreparedData
from trainflow.storage.digests import sha256_of_files

logger = logging.getLogger("trainflow.prepare_data")

# Part of the fingerprint: bump it when the prepared files change meaning, so old ones are not reused.
PREPARED_FORMAT_VERSION = 1


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
