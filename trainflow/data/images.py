"""Image folders: one subfolder per class of PNG or JPEG files, the layout of
`keras.utils.image_dataset_from_directory`. Decoded once, into the prepared Parquet data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainflow.data.raw import RawSplit
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
    (height, width) resizes them; without it every image must have the same size."""
    from PIL import Image

    folders = class_folders(root)
    files = [(label, path) for label, folder in enumerate(folders) for path in image_files(folder)]
    decoded = []
    for _, path in files:
        try:
            with Image.open(path) as image:
                image.load()
                decoded.append(image.copy())
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise DataSourceError(
                f"{path}: not a readable PNG or JPEG image ({error_reason(error)}); replace or "
                "remove it"
            ) from error
    grayscale = all(image.mode in GRAYSCALE_MODES for image in decoded)
    mode = "L" if grayscale else "RGB"
    if image_size is not None:
        height, width = image_size
        decoded = [
            image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
            for image in decoded
        ]
    else:
        sizes = [image.size for image in decoded]
        different = next((index for index, size in enumerate(sizes) if size != sizes[0]), None)
        if different is not None:
            raise DataSourceError(
                f"images:{root}: images have different sizes ({_described(root, files, decoded, 0)}, "
                f"{_described(root, files, decoded, different)}); pass --image-size HEIGHT,WIDTH "
                "to resize them all"
            )
        decoded = [image.convert(mode) for image in decoded]
    images = np.stack([np.asarray(image, dtype=np.uint8) for image in decoded])
    labels = np.array([label for label, _ in files], dtype=np.int64)
    return {"all": RawSplit(images, labels, f"images:{root}")}


def _described(root: Path, files: list[tuple[int, Path]], decoded: list, index: int) -> str:
    width, height = decoded[index].size
    return f"{files[index][1].relative_to(root)} is {height}x{width}"
