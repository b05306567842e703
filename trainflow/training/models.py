"""Models, built and compiled the same way wherever a model is needed: the built-in `mlp` and
`cnn`, or the user's builder function, named by import path (`MODULE:FUNCTION`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainflow.contract import ModelContract, PixelRange, labels_for_loss
from trainflow.errors import UnsafeModelError, error_reason
from trainflow.recipe import ModelRecipe
from trainflow.training.builders import ModelBuilderError, call_builder, import_builder
from trainflow.training.heads import accuracy_metric, loss_for, read_contract

if TYPE_CHECKING:
    import keras


def build_model(
    recipe: ModelRecipe | str, input_shape: tuple[int, ...], num_classes: int
) -> keras.Model:
    """The model of `build_classifier`, without its contract."""
    return build_classifier(recipe, input_shape, num_classes)[0]


def build_classifier(
    recipe: ModelRecipe | str,
    input_shape: tuple[int, ...],
    num_classes: int,
    pixels: PixelRange | None = None,
) -> tuple[keras.Model, ModelContract]:
    """Build the model of `recipe` (or of a model name, with the default optimizer), read its
    contract (`pixels` None: the range the model expects), and compile it unless its builder did,
    with the loss of its head; with its optimizer and metrics built, so that saved state loads
    into them.

    `mlp` is the classic Flatten -> Dense(128, relu) -> Dense(num_classes, softmax); `cnn` is two
    convolution/pooling blocks, dropout and a softmax layer. A builder's model must take
    `input_shape` images and output `num_classes` class probabilities or logits (or, for two
    classes, one of either), and hold no `Lambda` layer.
    """
    import keras

    recipe = recipe if isinstance(recipe, ModelRecipe) else ModelRecipe(model=recipe)
    if recipe.is_built_in:
        model = _built_in(recipe.model, input_shape, num_classes)
    else:
        model = call_builder(recipe.model, input_shape, num_classes)
    _refuse_lambda_layers(model, recipe.model)
    probe = np.zeros((1, *input_shape), dtype=np.float32)
    try:
        outputs = model(probe)
    except Exception as error:  # any error of the user's model
        raise ModelBuilderError(
            f"model {recipe.model} cannot take images of shape {input_shape} "
            f"({type(error).__name__}: {error_reason(error)}); build it for input_shape"
        ) from error
    outputs = keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)
    contract = read_contract(model, recipe.model, num_classes, outputs, pixels)
    if not model.compiled:
        optimizer_class = {
            "adam": keras.optimizers.Adam,
            "adamw": keras.optimizers.AdamW,
            "sgd": keras.optimizers.SGD,
            "rmsprop": keras.optimizers.RMSprop,
        }[recipe.optimizer]
        rate = {} if recipe.learning_rate is None else {"learning_rate": recipe.learning_rate}
        model.compile(
            optimizer=optimizer_class(**rate),
            loss=loss_for(contract),
            metrics=[accuracy_metric(contract)],
        )
    # load_weights silently skips optimizer state unless the optimizer already has its variables,
    # and a resumed epoch's metric sums can only be restored into metrics that exist: build both.
    model.optimizer.build(model.trainable_variables)
    labels = labels_for_loss(np.zeros(1, dtype=np.int64), contract, num_classes)
    model.compute_metrics(probe, labels, outputs, sample_weight=None)
    model.reset_metrics()
    return model, contract


def _mlp(input_shape: tuple[int, ...], num_classes: int) -> list[keras.layers.Layer]:
    import keras

    return [
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(num_classes, activation="softmax"),
    ]


def _cnn(input_shape: tuple[int, ...], num_classes: int) -> list[keras.layers.Layer]:
    import keras

    # Grayscale images come without a channel axis: give them one.
    channels = [] if len(input_shape) == 3 else [keras.layers.Reshape((*input_shape, 1))]
    return [
        *channels,
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(num_classes, activation="softmax"),
    ]


BUILT_IN_LAYERS = {"mlp": _mlp, "cnn": _cnn}


def _built_in(name: str, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    import keras

    layers = BUILT_IN_LAYERS[name](input_shape, num_classes)
    # Sequential, as in the textbook examples, so weights load into a model built there by hand.
    return keras.Sequential([keras.Input(shape=input_shape), *layers], name=name)


def _refuse_lambda_layers(model: keras.Model, name: str) -> None:
    """Refuse a model with a `Lambda` layer anywhere: its saved file would hold Python code, which
    loading in safe mode refuses, so the run could never be evaluated or reloaded."""
    import keras

    lambdas = [layer.name for layer in _all_layers(model) if isinstance(layer, keras.layers.Lambda)]
    if lambdas:
        raise ModelBuilderError(
            f"model {name} has Lambda layers ({', '.join(lambdas)}): their Python code cannot be "
            "saved safely, and trainflow loads models in Keras's safe mode. Write the computation "
            "as a layer class registered with @keras.saving.register_keras_serializable() instead"
        )


def _all_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """`layer` and every layer inside it, however nested: sub-models' layers and the layers a
    custom layer holds as attributes."""
    import keras

    found: dict[int, keras.layers.Layer] = {}
    pending = [layer]
    while pending:
        current = pending.pop()
        if id(current) in found:
            continue
        found[id(current)] = current
        children = list(getattr(current, "layers", []))
        for value in vars(current).values():
            values = value if isinstance(value, list | tuple) else [value]
            children += [item for item in values if isinstance(item, keras.layers.Layer)]
        pending += children
    return list(found.values())


def load_saved_model(path: Path, recipe: ModelRecipe | None = None) -> keras.Model:
    """`keras.models.load_model(path, safe_mode=True)`, after importing the builder's module of
    `recipe` (if any), which registers its custom layers; a refused unsafe model (a `Lambda` layer
    or other serialized Python code, which loading would run) is `UnsafeModelError`."""
    import keras

    if recipe is not None and not recipe.is_built_in:
        import_builder(recipe.model)
    try:
        return keras.models.load_model(path, safe_mode=True)
    except ValueError as error:
        if "safe_mode" not in str(error):
            raise
        raise UnsafeModelError(
            f"{path} holds Python code (a Lambda layer or a lambda) that loading would run; "
            "trainflow loads models in Keras's safe mode and refuses it. Use a model trainflow "
            "saved, or rebuild yours without Lambda layers"
        ) from error
