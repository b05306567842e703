"""Telling a store URL from a local path: the one part of the storage room anyone may use."""

from __future__ import annotations

from pathlib import Path


def is_url(location: str | Path) -> bool:
    """True for `scheme://…` locations other than `file://`: they never become local paths."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def local_path_of(location: str | Path) -> Path:
    """A local location (`path` or `file://path`) as a path."""
    text = str(location)
    return Path(text.removeprefix("file://"))
