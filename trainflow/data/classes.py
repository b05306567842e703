"""Class names: the folder names of an image folder, or a `classes.json` beside the data (a JSON
list of names, class 0 first); else the class numbers."""

from __future__ import annotations

import json
from pathlib import Path

from trainflow.data.images import class_folders
from trainflow.datasets import DataSource
from trainflow.errors import DataSourceError

CLASS_NAMES_FILE = "classes.json"


def class_names_file(source: DataSource) -> Path | None:
    """Where `source`'s class names would be: `classes.json` in its directory, or beside its
    file (npz); None for sources without one (keras.datasets, image folders)."""
    if source.location is None or source.kind == "images":
        return None
    directory = source.location.parent if source.kind == "npz" else source.location
    return directory / CLASS_NAMES_FILE


def class_names(source: DataSource, num_classes: int) -> list[str]:
    """The names of classes 0..num_classes-1."""
    if source.kind == "images":
        names = [folder.name for folder in class_folders(source.location)]
        return names + [str(label) for label in range(len(names), num_classes)]
    path = class_names_file(source)
    if path is None or not path.is_file():
        return [str(label) for label in range(num_classes)]
    try:
        names = json.loads(path.read_bytes())
    except ValueError as error:
        raise DataSourceError(f"{path}: not JSON ({error}); write a list of class names") from error
    if (
        not isinstance(names, list)
        or len(names) != num_classes
        or not all(isinstance(name, str) and name for name in names)
        or len(set(names)) != len(names)
    ):
        raise DataSourceError(
            f"{path}: expected a JSON list of {num_classes} distinct class names, class 0 first"
        )
    return names
