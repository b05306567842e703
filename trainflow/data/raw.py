"""A split as a reader returns it: raw arrays, before checking and normalising."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RawSplit:
    """Images and labels of one split, and where they came from (for error messages)."""

    images: np.ndarray
    labels: np.ndarray
    origin: str
