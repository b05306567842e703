"""Sizes in bytes as people write them: `512MiB`, `2GiB`, `300MB`, `1048576`."""

from __future__ import annotations

import re

SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
DECIMAL_UNITS = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_size(text: str) -> int:
    """`"512MiB"` -> 536870912. `KiB`/`MiB`/`GiB`/`TiB` and the short `K`/`M`/`G`/`T` are powers
    of 1024, `KB`/`MB`/`GB`/`TB` powers of 1000; a bare number is bytes."""
    match = SIZE_PATTERN.match(text)
    if not match:
        raise ValueError(f"size {text!r} is not a number of bytes such as 512MiB or 2GiB")
    number, unit = float(match[1]), match[2].upper()
    prefix = unit[:1] if unit[:1] in DECIMAL_UNITS else ""
    decimal = prefix and unit.endswith("B") and "I" not in unit
    return int(number * (DECIMAL_UNITS[prefix] if decimal else UNITS[prefix]))


def format_size(size: int) -> str:
    """536870912 -> `512 MiB`: the largest binary unit that keeps the number at least 1."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = UNITS[unit[0]]
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"
