"""The training history as a Parquet table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_history(path: Path, history: dict[str, list[float]], resumed_epochs: list[int]) -> None:
    """One row an epoch: its metrics, and whether training resumed during (or at the start of) it."""
    epochs = list(range(1, len(history.get("loss", [])) + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "epoch": epochs,
                **{name: values for name, values in sorted(history.items())},
                "resumed": [epoch in resumed_epochs for epoch in epochs],
            }
        ),
        path,
    )
