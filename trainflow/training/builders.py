"""The user's model builders: a function `FUNCTION(input_shape, num_classes) -> keras.Model` named
by its import path `MODULE:FUNCTION`, found as `python -m` would find the module (the working
directory first), on `PYTHONPATH`, or in an installed package."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from trainflow.errors import UserInputError, error_reason
from trainflow.recipe import BUILT_IN_MODELS

if TYPE_CHECKING:
    import keras


class ModelBuilderError(UserInputError):
    """A model builder that cannot be imported or called, or whose model trainflow cannot train."""


def import_builder(spec: str) -> Callable[..., keras.Model]:
    """The function `MODULE:FUNCTION` names, its module imported (which also registers the custom
    layers it defines, for loading saved models)."""
    module_name, _, function_name = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m`: the working directory's modules first
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any error of the user's module, ImportError or not
        raise ModelBuilderError(
            f"model builder {spec}: cannot import {module_name} ({type(error).__name__}: "
            f"{error_reason(error)}); give MODULE:FUNCTION importable from the working directory, "
            "PYTHONPATH or an installed package"
        ) from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ModelBuilderError(
            f"model builder {spec}: {module_name} has no function {function_name}"
        )
    return function


def check_builder(model: str) -> None:
    """Import a builder's function now (nothing for a built-in model), so that a wrong name fails
    before any work."""
    if model not in BUILT_IN_MODELS:
        import_builder(model)


def call_builder(spec: str, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The model the builder `spec` returns for `input_shape` images and `num_classes` classes.

    Grayscale images are (height, width); a builder that cannot take that shape, as a
    convolutional model written for MNIST's (28, 28, 1) cannot, is called again with a channel
    axis, (height, width, 1): Keras feeds such a model (height, width) images by adding the axis.
    """
    import keras

    builder = import_builder(spec)
    try:
        model = builder(input_shape, num_classes)
    except Exception as error:
        model = _with_a_channel_axis(builder, input_shape, num_classes)
        if model is None:
            raise ModelBuilderError(
                f"model builder {spec} raised {type(error).__name__} for "
                f"input_shape={input_shape}, num_classes={num_classes}: {error_reason(error)}"
            ) from error
    if not isinstance(model, keras.Model):
        raise ModelBuilderError(
            f"model builder {spec} returned {type(model).__name__}, not a keras.Model"
        )
    return model


def _with_a_channel_axis(
    builder: Callable[..., keras.Model], input_shape: tuple[int, ...], num_classes: int
) -> keras.Model | None:
    """The builder's model for grayscale images with a channel axis; None if that fails too, or
    the images are not grayscale."""
    import keras

    if len(input_shape) != 2:
        return None
    try:
        model = builder((*input_shape, 1), num_classes)
    except Exception:  # the error of the shape trainflow gives is the one to report
        return None
    return model if isinstance(model, keras.Model) and _takes_any_rank(model) else None


def _takes_any_rank(model: keras.Model) -> bool:
    """A functional or sequential model: one whose calls add a missing trailing axis of 1."""
    return bool(getattr(model, "inputs", None))
