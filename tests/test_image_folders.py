"""`images:DIR` sources (one subfolder per class of PNG/JPEG files) and class names: decoded into
the prepared data once, resized on request, and every problem one error naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from examples.datasets import RGB_CLASSES, write_digits_npz, write_rgb_image_folder
from tasks.prepare_data import prepare_data
from trainflow.data.prepared import read_split
from trainflow.datasets import DataSource, PreparationSpec
from trainflow.errors import DataSourceError
from trainflow.paths import ArtifactPaths


def prepare(spec: str, artifacts, **preparation):
    return prepare_data(
        DataSource.parse(spec), PreparationSpec(**preparation), ArtifactPaths.at(artifacts)
    )


def test_an_image_folder_becomes_rgb_data_with_the_folder_names_as_classes(tmp_path, artifacts):
    folder = write_rgb_image_folder(tmp_path / "pets")
    prepared = prepare(f"images:{folder}", artifacts)
    assert prepared.image_shape == (12, 12, 3)
    assert (prepared.num_classes, prepared.class_names) == (3, sorted(RGB_CLASSES))
    assert sum(prepared.rows.values()) == 120
    images, labels = read_split(prepared.paths.split("test"))
    assert images.shape[1:] == (12, 12, 3) and 0 <= images.min() and images.max() <= 1
    # the class's own channel is the bright one in every image
    channels = [RGB_CLASSES.index(prepared.class_names[label]) for label in labels]
    assert (images.mean(axis=(1, 2)).argmax(axis=1) == channels).all()
    again = prepare(f"images:{folder}", artifacts)
    assert again.reused and again.fingerprint == prepared.fingerprint


def test_moving_an_image_to_another_class_is_other_data(tmp_path, artifacts):
    folder = write_rgb_image_folder(tmp_path / "pets", per_class=10)
    before = prepare(f"images:{folder}", artifacts, num_classes=3)
    (folder / "red" / "red-000.png").rename(folder / "green" / "red-000.png")
    assert prepare(f"images:{folder}", artifacts, num_classes=3).fingerprint != before.fingerprint


def test_image_size_resizes_every_image_and_is_part_of_the_fingerprint(tmp_path, artifacts):
    folder = write_rgb_image_folder(tmp_path / "pets", per_class=10)
    Image.new("RGB", (30, 20), (250, 0, 0)).save(folder / "red" / "large.jpg")
    with pytest.raises(DataSourceError, match="images have different sizes .*--image-size"):
        prepare(f"images:{folder}", artifacts, num_classes=3)
    resized = prepare(f"images:{folder}", artifacts, num_classes=3, image_size=(8, 6))
    assert resized.image_shape == (8, 6, 3)


def test_grayscale_images_stay_single_channel(tmp_path, artifacts):
    for name, value in (("dark", 20), ("light", 230)):
        (tmp_path / "shades" / name).mkdir(parents=True)
        for index in range(10):
            Image.new("L", (5, 7), value + index).save(tmp_path / "shades" / name / f"{index}.png")
    prepared = prepare(f"images:{tmp_path / 'shades'}", artifacts, num_classes=2)
    assert prepared.image_shape == (7, 5)


def test_an_unreadable_image_is_named(tmp_path, artifacts):
    folder = write_rgb_image_folder(tmp_path / "pets", per_class=5)
    broken = folder / "blue" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataSourceError, match=f"{broken}: not a readable PNG or JPEG image"):
        prepare(f"images:{folder}", artifacts)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"only": 3}, "has 1 class folders; expected one subfolder per class"),
        ({"cats": 3, "dogs": 0}, "dogs: class folder without PNG or JPEG files"),
    ],
)
def test_a_folder_that_is_not_one_subfolder_per_class_is_refused(
    tmp_path, artifacts, layout, message
):
    for name, count in layout.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (4, 4)).save(tmp_path / "data" / name / f"{index}.png")
    with pytest.raises(DataSourceError, match=message):
        prepare(f"images:{tmp_path / 'data'}", artifacts)


def test_class_names_come_from_classes_json_beside_the_data(tmp_path, artifacts):
    source = write_digits_npz(tmp_path / "digits" / "digits.npz")
    names = [f"digit {label}" for label in range(10)]
    (source.parent / "classes.json").write_text(json.dumps(names))
    assert prepare(f"npz:{source}", artifacts).class_names == names


def test_a_wrong_classes_json_is_one_error_naming_it(tmp_path, artifacts):
    source = write_digits_npz(tmp_path / "digits" / "digits.npz")
    (source.parent / "classes.json").write_text(json.dumps(["zero", "one"]))
    with pytest.raises(DataSourceError, match="classes.json: expected a JSON list of 10 distinct"):
        prepare(f"npz:{source}", artifacts)


def test_real_digits_are_ten_classes_of_8x8(tmp_path, artifacts):
    prepared = prepare(f"npz:{write_digits_npz(tmp_path / 'digits.npz')}", artifacts)
    assert (prepared.image_shape, prepared.num_classes) == ((8, 8), 10)
    assert prepared.class_names == [str(label) for label in range(10)]
    images, _ = read_split(prepared.paths.split("train"))
    assert images.dtype == np.float32 and images.max() == 1.0
