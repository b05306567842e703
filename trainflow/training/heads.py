"""Reading a Keras classifier's contract from the model itself: its compiled loss (a `keras.losses`
object, function or name, with `from_logits`) or, uncompiled, its head (the last layer's
activation); and the pixel range it expects (raw when it rescales its input itself).

Supported: K class probabilities or K logits, and for two classes one sigmoid probability or one
logit. Whatever disagrees (a softmax whose loss takes logits, K outputs for a binary loss) or is no
classifier's loss is a `ModelBuilderError`, one line naming the builder, before any training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from trainflow.contract import LabelForm, ModelContract, Outputs, PixelRange
from trainflow.training.builders import ModelBuilderError

if TYPE_CHECKING:
    import keras

# The classifiers' losses trainflow evaluates, by the name of their Keras function.
LOSS_LABELS: dict[str, LabelForm] = {
    "sparse_categorical_crossentropy": "sparse",
    "categorical_crossentropy": "one_hot",
    "categorical_focal_crossentropy": "one_hot",
    "binary_crossentropy": "binary",
    "binary_focal_crossentropy": "binary",
}
SUPPORTED_LOSSES = "sparse categorical, categorical or binary cross-entropy (focal included)"
# How close to 1 a probe's class probabilities must sum (float32 softmax).
PROBABILITY_SUM_TOLERANCE = 1e-3


def read_contract(
    model: keras.Model,
    name: str,
    num_classes: int,
    outputs: np.ndarray,
    pixels: PixelRange | None = None,
) -> ModelContract:
    """The contract of `model` (built by `name`), whose `outputs` for a probe batch are given:
    from its compiled loss, or its head if it is uncompiled; `pixels` None chooses the range from
    the model (`expected_pixels`)."""
    units = _output_units(outputs, name, num_classes)
    activation = _output_activation(model)
    if model.compiled:
        loss, labels, from_logits = _compiled_loss(model, name)
        _check_agreement(name, loss, labels, from_logits, units, activation, outputs, num_classes)
        kind: Outputs = "logits" if from_logits else "probabilities"
    else:
        kind = _head_kind(name, units, activation, outputs)
        labels = "binary" if units == 1 else "sparse"
        loss = "binary_crossentropy" if units == 1 else "sparse_categorical_crossentropy"
    return ModelContract(
        outputs=kind, labels=labels, loss=loss, pixels=pixels or expected_pixels(model)
    )


def loss_for(contract: ModelContract) -> keras.losses.Loss:
    """The loss trainflow compiles an uncompiled model with: the cross-entropy of its head."""
    import keras

    from_logits = contract.outputs == "logits"
    if contract.binary:
        return keras.losses.BinaryCrossentropy(from_logits=from_logits)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)


def accuracy_metric(contract: ModelContract) -> keras.metrics.Metric:
    """Training accuracy for the head: one logit says class 1 above 0, one probability above 0.5."""
    import keras

    if contract.binary:
        threshold = 0.0 if contract.outputs == "logits" else 0.5
        return keras.metrics.BinaryAccuracy(name="accuracy", threshold=threshold)
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def expected_pixels(model: keras.Model) -> PixelRange:
    """`raw` when the model rescales its input itself: a `Rescaling` layer, or a `Normalization`
    layer given a mean of 0..255 pixels (ConvNeXt's), before any layer with weights, as in the
    `keras.applications` models that include their preprocessing; else `unit`."""
    import keras

    for layer in _layers_in_order(model):
        if isinstance(layer, keras.layers.Rescaling):
            return "raw"
        if isinstance(layer, keras.layers.Normalization):
            if layer.input_mean is not None and np.max(np.abs(layer.input_mean)) > 1:
                return "raw"
            continue
        if layer.weights:
            return "unit"
    return "unit"


def _layers_in_order(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The model's leaf layers in the order they apply, nested models opened in place."""
    ordered = []
    for layer in getattr(model, "layers", []):
        ordered += _layers_in_order(layer) if getattr(layer, "layers", None) else [layer]
    return ordered


def _output_units(outputs: object, name: str, num_classes: int) -> int:
    if not isinstance(outputs, np.ndarray):
        raise ModelBuilderError(
            f"model {name} has several outputs; trainflow trains classifiers with one output "
            "(one row of class scores per image)"
        )
    if outputs.ndim == 2 and (
        outputs.shape[1] == num_classes or (outputs.shape[1] == 1 and num_classes == 2)
    ):
        return int(outputs.shape[1])
    one = "" if num_classes != 2 else ", or (1, 1): one sigmoid probability or one logit"
    raise ModelBuilderError(
        f"model {name} outputs shape {(1, *outputs.shape[1:])} for one image; expected "
        f"(1, {num_classes}): one output per class (end with Dense({num_classes}, "
        f"activation='softmax') or Dense({num_classes}) for logits){one}"
    )


def _output_activation(model: keras.Model) -> str | None:
    """`softmax`, `sigmoid` or `linear` for the layer that computes the output, when it says;
    None when the model does not show it (a subclassed model, a custom last layer)."""
    import keras

    try:
        layer = model.outputs[0]._keras_history.operation
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    if isinstance(layer, keras.Model):  # a nested model computes the output: its own last layer
        return _output_activation(layer)
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return name if name in ("softmax", "sigmoid", "linear") else None


def _compiled_loss(model: keras.Model, name: str) -> tuple[str, LabelForm, bool]:
    """The compiled loss's function name, label form and `from_logits`."""
    import keras

    loss = model.loss
    if isinstance(loss, list | tuple | dict):
        raise ModelBuilderError(
            f"model {name} is compiled with several losses; trainflow trains classifiers with one "
            f"output and one loss, {SUPPORTED_LOSSES}"
        )
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError:
            pass
    function = getattr(loss, "fn", loss)
    loss_name = getattr(function, "__name__", None) or getattr(loss, "name", None) or str(loss)
    if loss_name not in LOSS_LABELS:
        raise ModelBuilderError(
            f"model {name} is compiled with loss {loss_name}: trainflow trains classifiers, with "
            f"{SUPPORTED_LOSSES}; compile it with one of those, or leave it uncompiled"
        )
    config = loss.get_config() if isinstance(loss, keras.losses.Loss) else {}
    return loss_name, LOSS_LABELS[loss_name], bool(config.get("from_logits", False))


def _check_agreement(
    name: str,
    loss: str,
    labels: LabelForm,
    from_logits: bool,
    units: int,
    activation: str | None,
    outputs: np.ndarray,
    num_classes: int,
) -> None:
    """The compiled loss fits the head: shapes, and logits or probabilities."""
    stated = f"model {name} is compiled with {loss}(from_logits={from_logits})"
    if labels == "binary" and num_classes != 2:
        raise ModelBuilderError(
            f"{stated}, a binary loss, but the data has {num_classes} classes; use "
            f"sparse_categorical_crossentropy with {num_classes} outputs"
        )
    if labels == "binary" and units != 1:
        raise ModelBuilderError(
            f"{stated}, a binary loss, but it has {units} outputs; a binary loss takes one output "
            "(Dense(1, activation='sigmoid'), or Dense(1) with from_logits=True)"
        )
    if labels != "binary" and units == 1:
        raise ModelBuilderError(
            f"{stated}, which takes one output per class, but it has one output; for one output "
            "compile it with binary_crossentropy"
        )
    if from_logits and activation in ("softmax", "sigmoid"):
        raise ModelBuilderError(
            f"{stated}, but it ends in a {activation}, whose outputs are probabilities, not "
            "logits; drop the activation or set from_logits=False"
        )
    if not from_logits and (activation == "linear" or not _are_probabilities(outputs)):
        raise ModelBuilderError(
            f"{stated}, which takes probabilities, but its outputs are not probabilities "
            f"(it ends in {activation or 'a layer that does not give them'}); set "
            f"from_logits=True or end it with activation='{'sigmoid' if units == 1 else 'softmax'}'"
        )


def _head_kind(name: str, units: int, activation: str | None, outputs: np.ndarray) -> Outputs:
    """An uncompiled model's outputs: from its last activation, or else from its probe's values."""
    if units > 1 and activation == "sigmoid":
        raise ModelBuilderError(
            f"model {name} ends in a sigmoid over {units} outputs (independent yes/no scores, not "
            "class probabilities); end it with activation='softmax', or with no activation for "
            "logits"
        )
    if units == 1 and activation == "softmax":
        raise ModelBuilderError(
            f"model {name} ends in a softmax over one output, which is always 1; end it with "
            "activation='sigmoid', or with no activation for a logit"
        )
    if activation in ("softmax", "sigmoid"):
        return "probabilities"
    if activation == "linear":
        return "logits"
    if units == 1:
        raise ModelBuilderError(
            f"model {name} has one output and trainflow cannot tell whether it is a probability "
            "or a logit; end it with Dense(1, activation='sigmoid'), or compile it with "
            "keras.losses.BinaryCrossentropy(from_logits=True)"
        )
    return "probabilities" if _are_probabilities(outputs) else "logits"


def _are_probabilities(outputs: np.ndarray) -> bool:
    """Non-negative rows summing to 1 (or, for one output, values in [0, 1])."""
    if (outputs < 0).any() or (outputs > 1 + PROBABILITY_SUM_TOLERANCE).any():
        return False
    if outputs.shape[1] == 1:
        return True
    return bool(np.allclose(outputs.sum(axis=1), 1, atol=PROBABILITY_SUM_TOLERANCE))
