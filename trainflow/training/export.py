"""The inference-only TF SavedModel of a trained model."""

from __future__ import annotations

from pathlib import Path

import keras

from trainflow.contract import ModelContract


def export_for_serving(
    model: keras.Model, input_shape: tuple[int, ...], contract: ModelContract, path: Path
) -> None:
    """Write `model` as a TF SavedModel with a `serve` endpoint (also the `serving_default`
    signature) that takes float32 images of `input_shape`, with pixels in the range of
    `contract.pixels`, and returns (N, K) class probabilities whatever the model's head: a softmax
    of logits, a sigmoid of one logit and its complement.

    `model.export` would serve the model called without `training=False`: augmentation layers
    (`RandomFlip`, `RandomRotation`, ...) default to training and would transform every image
    served. The endpoint here calls it in inference mode.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=lambda images: serving_probabilities(model(images, training=False), contract),
        input_signature=[keras.InputSpec(shape=(None, *input_shape), dtype="float32")],
    )
    archive.write_out(str(path), verbose=False)


def serving_probabilities(outputs, contract: ModelContract):
    """`trainflow.contract.class_probabilities`, as graph operations of the serving endpoint."""
    from_logits = contract.outputs == "logits"
    if contract.binary:
        positive = keras.ops.sigmoid(outputs) if from_logits else outputs
        return keras.ops.concatenate([1.0 - positive, positive], axis=1)
    return keras.ops.softmax(outputs, axis=-1) if from_logits else outputs
