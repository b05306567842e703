"""Models as the official Keras and TensorFlow tutorials write them, each wrapped unchanged in the
builder signature trainflow calls, `FUNCTION(input_shape, num_classes)`:

    trainflow run --model examples.tutorial_models:image_classification --dataset images:DIR

- `quickstart`: TensorFlow's "TensorFlow 2 quickstart for beginners": logits, compiled with
  `SparseCategoricalCrossentropy(from_logits=True)`.
- `image_classification`: TensorFlow's "Image classification": `Rescaling(1./255)` inside (so
  trainflow feeds it raw 0..255 pixels), convolutions, logits.
- `simple_convnet`: keras.io's "Simple MNIST convnet": softmax, compiled with
  `categorical_crossentropy` over one-hot labels.
- `from_scratch`: keras.io's "Image classification from scratch", smaller: `Rescaling` inside and,
  for two classes, one logit with `BinaryCrossentropy(from_logits=True)`.
- `binary_sigmoid`: one sigmoid unit for two classes, left uncompiled (trainflow compiles it with
  binary cross-entropy and --optimizer).
- `mobilenet` and `frozen_mobilenet`: a `keras.applications` backbone that includes its own
  preprocessing (random weights: nothing is downloaded), with a new head; frozen as keras.io's
  "Transfer learning & fine-tuning" freezes it (`trainable = False`, called with `training=False`
  so BatchNormalization stays in inference mode).
- `subclassed`: a subclassed `keras.Model`, registered so that its saved file loads in safe mode.

Grayscale images come as (height, width); the convolutional models, written for images with a
channel axis, get (height, width, 1) from trainflow, which calls a builder again with that shape
when the first one fails.
"""

from __future__ import annotations

import keras
from keras import layers


def quickstart(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The quickstart's Flatten, Dense(128, relu), Dropout(0.2), Dense(10) logits."""
    model = keras.models.Sequential(
        [
            layers.Input(shape=input_shape),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(num_classes),
        ]
    )
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="adam", loss=loss_fn, metrics=["accuracy"])
    return model


def image_classification(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The "Image classification" tutorial's model: rescaling inside, three convolution blocks,
    and logits."""
    model = keras.Sequential(
        [
            layers.Input(shape=input_shape),
            layers.Rescaling(1.0 / 255),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(num_classes),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def simple_convnet(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """keras.io's "Simple MNIST convnet", compiled with categorical cross-entropy (one-hot
    labels)."""
    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def from_scratch(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """keras.io's "Image classification from scratch", smaller: one logit for two classes."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(64, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    units = 1 if num_classes == 2 else num_classes
    x = layers.Dropout(0.25)(x)
    outputs = layers.Dense(units, activation=None)(x)
    model = keras.Model(inputs, outputs)
    if units == 1:  # as the tutorial compiles it
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        metrics = [keras.metrics.BinaryAccuracy(name="acc")]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = ["accuracy"]
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss, metrics=metrics)
    return model


def binary_sigmoid(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """One sigmoid unit: the probability of the second class. Uncompiled."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Flatten(),
            layers.Dense(32, activation="relu"),
            layers.Dense(1, activation="sigmoid"),
        ]
    )


def _mobilenet_classifier(
    input_shape: tuple[int, ...], num_classes: int, frozen: bool
) -> keras.Model:
    backbone = keras.applications.MobileNetV3Small(
        input_shape=input_shape,
        include_top=False,
        weights=None,  # or a local weights file; nothing can be downloaded here
        include_preprocessing=True,  # its own Rescaling: it takes raw 0..255 pixels
        minimalistic=True,
        pooling="avg",
    )
    backbone.trainable = not frozen
    inputs = keras.Input(shape=input_shape)
    features = backbone(inputs, training=False) if frozen else backbone(inputs)
    features = layers.Dropout(0.2)(features)
    outputs = layers.Dense(num_classes)(features)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def mobilenet(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """MobileNetV3Small (at least 32x32 RGB images), all of it trained, with a new logits head."""
    return _mobilenet_classifier(input_shape, num_classes, frozen=False)


def frozen_mobilenet(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """MobileNetV3Small frozen, in inference mode; only the new head trains."""
    return _mobilenet_classifier(input_shape, num_classes, frozen=True)


@keras.saving.register_keras_serializable(package="tutorial_models")
class DigitClassifier(keras.Model):
    """A subclassed model: two dense layers and a softmax, built from its config."""

    def __init__(self, num_classes: int, hidden: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.hidden_units = num_classes, hidden
        self.flatten = layers.Flatten()
        self.hidden = layers.Dense(hidden, activation="relu")
        self.classes = layers.Dense(num_classes, activation="softmax")

    def call(self, inputs, training=False):
        return self.classes(self.hidden(self.flatten(inputs)))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "hidden": self.hidden_units,
        }


def subclassed(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The subclassed `DigitClassifier`, uncompiled (built by its first call)."""
    return DigitClassifier(num_classes)
