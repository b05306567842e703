"""The command line's tables: columns padded to their widest cell."""

from __future__ import annotations


def print_table(header: tuple[str, ...], rows: list[tuple]) -> None:
    """Print `header` and `rows`, each column as wide as its widest cell."""
    widths = [
        max(len(str(row[column])) for row in [header, *rows]) for column in range(len(header))
    ]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
