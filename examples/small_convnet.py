"""A small image classifier to train with trainflow: `--model examples.small_convnet:build_model`.

It shows what a builder of your own may hold, with every guarantee kept (exact resume included):
random augmentation layers, a nested block with BatchNormalization and Dropout, and a custom layer
registered with Keras so that the saved `.keras` file loads in safe mode once this module is
imported.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="examples")
class ChannelScale(keras.layers.Layer):
    """Multiplies each channel by a learnt factor (initially 1)."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs):
        return inputs * self.scale


def conv_block(filters: int, name: str) -> keras.Sequential:
    """Convolution, batch normalisation, ReLU, pooling and dropout, as one nested model."""
    return keras.Sequential(
        [
            keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Dropout(0.2),
        ],
        name=name,
    )


def build_model(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The builder trainflow calls: images of `input_shape` ((height, width) for grayscale,
    (height, width, channels) otherwise) in, `num_classes` class probabilities out. Left
    uncompiled, trainflow compiles it with --optimizer and --learning-rate."""
    inputs = keras.Input(shape=input_shape)
    images = inputs if len(input_shape) == 3 else keras.layers.Reshape((*input_shape, 1))(inputs)
    augmented = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomRotation(0.05),
            keras.layers.RandomZoom(0.1),
        ],
        name="augmentation",
    )(images)
    features = conv_block(32, "block_1")(augmented)
    features = conv_block(64, "block_2")(features)
    features = ChannelScale(name="channel_scale")(features)
    features = keras.layers.GlobalAveragePooling2D()(features)
    features = keras.layers.Dropout(0.3)(features)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(features)
    return keras.Model(inputs, outputs, name="small_convnet")
