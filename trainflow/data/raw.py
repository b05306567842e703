"""A split as a reader describes it, before checking and normalising: what is known before its
pixels are read, all its labels, and its images, read in row order a chunk at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

# Given the most rows a chunk may have, the images in row order, in chunks of at most that many.
ImageChunks = Callable[[int], Iterator[np.ndarray]]


@dataclass(frozen=True)
class RawSplit:
    """One split of a source: where it came from (for error messages), the shape of its images as
    the source declares it, (count, height, width[, channels]) when the source is valid, their
    pixel dtype, all its labels, and `image_chunks(max_rows)`, which reads the images in row
    order. `images` holds the images themselves when they are in memory anyway (keras.datasets).
    """

    origin: str
    shape: tuple[int, ...]
    pixel_dtype: np.dtype
    labels: np.ndarray
    image_chunks: ImageChunks
    images: np.ndarray | None = None

    @classmethod
    def of_arrays(cls, images: np.ndarray, labels: np.ndarray, origin: str) -> RawSplit:
        """A split held in memory as whole arrays."""
        return cls(origin, images.shape, images.dtype, labels, _slices_of(images), images)

    @property
    def count(self) -> int:
        """The number of images the source declares (0 for a shape without dimensions)."""
        return self.shape[0] if self.shape else 0


def _slices_of(images: np.ndarray) -> ImageChunks:
    def chunks(max_rows: int) -> Iterator[np.ndarray]:
        for start in range(0, len(images), max_rows):
            yield images[start : start + max_rows]

    return chunks
