"""How a model is built and compiled: a built-in architecture or a builder function by import path,
and the optimizer trainflow compiles it with when the builder leaves it uncompiled."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

OptimizerName = Literal["adam", "sgd", "adamw", "rmsprop"]
BUILT_IN_MODELS = ("mlp", "cnn")
MODEL_HELP = (
    "mlp, cnn, or MODULE:FUNCTION, a function (input_shape, num_classes) -> keras.Model importable "
    "from the working directory, PYTHONPATH or an installed package"
)
# `package.module:function`, as Python names them.
BUILDER_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class ModelRecipe(BaseModel):
    """How the model is built and compiled: a built-in architecture or a builder function by import
    path, and the optimizer trainflow compiles it with if the builder leaves it uncompiled."""

    model_config = ConfigDict(frozen=True)

    model: str = "mlp"
    optimizer: OptimizerName = "adam"
    learning_rate: float | None = None

    @field_validator("model")
    @classmethod
    def _model_is_built_in_or_a_builder(cls, value: str) -> str:
        return checked_model(value)

    @property
    def is_built_in(self) -> bool:
        return self.model in BUILT_IN_MODELS


def checked_model(value: str) -> str:
    """`value` if it names a built-in model or a builder function as MODULE:FUNCTION."""
    if value not in BUILT_IN_MODELS and not BUILDER_PATTERN.match(value):
        raise ValueError(f"model {value!r} is not one of {MODEL_HELP}")
    return value
