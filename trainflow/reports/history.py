"""The training history as a Parquet table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from trainflow.storage.atomic import write_parquet


def write_history(path: Path, history: dict[str, list[float]], resumed_epochs: list[int]) -> None:
    """One row an epoch: its metrics, and whether training resumed during (or at the start of) it."""
    epochs = list(range(1, len(history.get("loss", [])) + 1))
    write_parquet(
        pa.table(
            {
                "epoch": epochs,
                **{name: values for name, values in sorted(history.items())},
                "resumed": [epoch in resumed_epochs for epoch in epochs],
            }
        ),
        path,
    )
