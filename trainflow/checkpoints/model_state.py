"""The parts of a model's state that no Keras file keeps: random seed generators and the running
sums of the training metrics."""

from __future__ import annotations

import keras
import numpy as np


def seed_generators(model: keras.Model) -> list[keras.random.SeedGenerator]:
    """The random seed generators of the model's layers (dropout), whose state no Keras file keeps."""
    return [layer.seed_generator for layer in model.layers if hasattr(layer, "seed_generator")]


def capture_random_state(model: keras.Model) -> list[list[int]]:
    """The seed generators' states, as plain integers."""
    return [np.asarray(generator.state.value).tolist() for generator in seed_generators(model)]


def restore_random_state(model: keras.Model, states: list[list[int]]) -> None:
    """Put back the seed generators' states captured by `capture_random_state`."""
    generators = seed_generators(model)
    if len(generators) != len(states):
        raise ValueError(f"checkpoint has {len(states)} seed states, model {len(generators)}")
    for generator, state in zip(generators, states):
        generator.state.assign(np.asarray(state, dtype=generator.state.dtype))


def capture_metrics_state(model: keras.Model) -> list:
    """The running values of the model's training metrics (sums and counts)."""
    return [np.asarray(variable.value).tolist() for variable in model.metrics_variables]


def restore_metrics_state(model: keras.Model, values: list) -> None:
    """Put back metric values captured by `capture_metrics_state`."""
    variables = model.metrics_variables
    if len(variables) != len(values):
        raise ValueError(f"checkpoint has {len(values)} metric values, model {len(variables)}")
    for variable, value in zip(variables, values):
        variable.assign(np.asarray(value, dtype=variable.dtype))
