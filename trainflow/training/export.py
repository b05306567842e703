"""The inference-only TF SavedModel of a trained model."""

from __future__ import annotations

from pathlib import Path

import keras


def export_for_serving(model: keras.Model, input_shape: tuple[int, ...], path: Path) -> None:
    """Write `model` as a TF SavedModel with a `serve` endpoint (also the `serving_default`
    signature) that takes float32 images of `input_shape` and returns class probabilities.

    `model.export` would serve the model called without `training=False`: augmentation layers
    (`RandomFlip`, `RandomRotation`, ...) default to training and would transform every image
    served. The endpoint here calls it in inference mode.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=lambda images: model(images, training=False),
        input_signature=[keras.InputSpec(shape=(None, *input_shape), dtype="float32")],
    )
    archive.write_out(str(path), verbose=False)
