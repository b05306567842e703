"""Two small datasets of the kinds users bring, to try a model on (the README and the tests use
them): scikit-learn's real handwritten digits as an npz file, and a folder of colour PNG images,
one subfolder per class.

    python -m examples.datasets digits examples-data/digits.npz
    python -m examples.datasets colours examples-data/colours
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

RGB_CLASSES = ("red", "green", "blue")


def write_digits_npz(path: Path) -> Path:
    """scikit-learn's `load_digits` (1,797 real 8x8 handwritten digits, 10 classes; the data ships
    with the package) as an npz source: pixels 0..16 scaled to 0..255, a fixed fifth held out as
    the test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(labels))
    test, train = order[: len(order) // 5], order[len(order) // 5 :]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path, x_train=images[train], y_train=labels[train], x_test=images[test], y_test=labels[test]
    )
    return path


def write_rgb_image_folder(
    root: Path, per_class: int = 40, size: tuple[int, int] = (12, 12)
) -> Path:
    """Three classes of colour PNG images: in class `red` the red channel is the bright one, and
    so on, on random noise; `size` is (height, width). (Classes count in folder name order: blue,
    green, red.)"""
    generator = np.random.default_rng(7)
    height, width = size
    for channel, name in enumerate(RGB_CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = generator.integers(0, 90, size=(height, width, 3), dtype=np.uint8)
            pixels[..., channel] = generator.integers(160, 256, size=(height, width))
            Image.fromarray(pixels, mode="RGB").save(folder / f"{name}-{index:03d}.png")
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.datasets", description=__doc__)
    parser.add_argument("dataset", choices=["digits", "colours"])
    parser.add_argument("path", type=Path, help="the npz file (digits) or folder (colours)")
    args = parser.parse_args(argv)
    written = (write_digits_npz if args.dataset == "digits" else write_rgb_image_folder)(args.path)
    print(f"Wrote {written}")


if __name__ == "__main__":
    main()
