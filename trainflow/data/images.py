"""Image folders: one subfolder per class of PNG or JPEG files, the layout of
`keras.utils.image_dataset_from_directory`. Decoded once, into the prepared Parquet data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from trainflow.data.raw import ImageChunks, RawSplit
from trainflow.errors import DataSourceError, error_reason

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAYSCALE_MODES = ("1", "L", "I", "I;16", "F")


def class_folders(root: Path) -> list[Path]:
    """The class subfolders of `root`, in name order (class i is the i-th)."""
    return sorted(
        path for path in root.iterdir() if path.is_dir() and not path.name.startswith(".")
    )


def image_files(folder: Path) -> list[Path]:
    """The PNG and JPEG files of one class folder, in name order."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )


def read_image_directory(root: Path, image_size: tuple[int, int] | None) -> dict[str, RawSplit]:
    """All images under `root` as one split (`all`): uint8 pixels of shape (N, H, W) when every
    image is grayscale, else (N, H, W, 3); label i for the i-th class folder. `image_size`
    (height, width) resizes them; without it every image must have the same size.

    Only the files' headers are read now (size and mode: a file that is not an image fails here);
    the images are decoded as the split's chunks are read."""
    folders = class_folders(root)
    files = [(label, path) for label, folder in enumerate(folders) for path in image_files(folder)]
    headers = [_header(path) for _, path in files]
    mode = "L" if all(mode in GRAYSCALE_MODES for _, mode in headers) else "RGB"
    if image_size is None:
        sizes = [size for size, _ in headers]
        different = next((index for index, size in enumerate(sizes) if size != sizes[0]), None)
        if different is not None:
            raise DataSourceError(
                f"images:{root}: images have different sizes ({_described(root, files, sizes, 0)}, "
                f"{_described(root, files, sizes, different)}); pass --image-size HEIGHT,WIDTH "
                "to resize them all"
            )
        width, height = sizes[0]
    else:
        height, width = image_size
    channels = () if mode == "L" else (3,)
    return {
        "all": RawSplit(
            origin=f"images:{root}",
            shape=(len(files), height, width, *channels),
            pixel_dtype=np.dtype(np.uint8),
            labels=np.array([label for label, _ in files], dtype=np.int64),
            image_chunks=_decoded_chunks([path for _, path in files], mode, image_size),
        )
    }


def _header(path: Path) -> tuple[tuple[int, int], str]:
    """The (width, height) and mode of an image file, from its header (PIL opens lazily)."""
    from PIL import Image

    with _readable(path), Image.open(path) as image:
        return image.size, image.mode


def _decoded_chunks(
    paths: list[Path], mode: str, image_size: tuple[int, int] | None
) -> ImageChunks:
    """Decode the images of `paths` in `mode`, resized to `image_size` if given, chunk by chunk."""

    def chunks(max_rows: int) -> Iterator[np.ndarray]:
        for start in range(0, len(paths), max_rows):
            yield np.stack(
                [_decoded(path, mode, image_size) for path in paths[start : start + max_rows]]
            )

    return chunks


def _decoded(path: Path, mode: str, image_size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    with _readable(path), Image.open(path) as image:
        image.load()
        converted = image.convert(mode)
    if image_size is not None:
        height, width = image_size
        converted = converted.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(converted, dtype=np.uint8)


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Report an image PIL cannot open or decode as one line naming it."""
    from PIL import Image

    try:
        yield
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DataSourceError(
            f"{path}: not a readable PNG or JPEG image ({error_reason(error)}); replace or "
            "remove it"
        ) from error


def _described(
    root: Path, files: list[tuple[int, Path]], sizes: list[tuple[int, int]], index: int
) -> str:
    width, height = sizes[index]
    return f"{files[index][1].relative_to(root)} is {height}x{width}"
