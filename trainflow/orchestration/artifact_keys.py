"""The stable keys of the Prefect artifacts a run publishes (lowercase letters, digits, dashes)."""

from __future__ import annotations

import re


def _slug(run_name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", run_name.lower()).strip("-")


def summary_key(run_name: str) -> str:
    """Markdown summary: parameters, data, resume events, metrics, pictures, promotion."""
    return f"trainflow-run-{_slug(run_name)}"


def classes_key(run_name: str) -> str:
    """Table of per-class test metrics."""
    return f"trainflow-classes-{_slug(run_name)}"


def progress_key(run_name: str) -> str:
    """Training progress in percent, updated every epoch."""
    return f"trainflow-progress-{_slug(run_name)}"
