"""The training history as a Parquet table."""

from __future__ import annotations

import pyarrow as pa


def history_table(history: dict[str, list[float]], resumed_epochs: list[int]) -> pa.Table:
    """One row an epoch: its metrics, and whether training resumed during (or at the start of) it."""
    epochs = list(range(1, len(history.get("loss", [])) + 1))
    return pa.table(
        {
            "epoch": epochs,
            **{name: values for name, values in sorted(history.items())},
            "resumed": [epoch in resumed_epochs for epoch in epochs],
        }
    )
