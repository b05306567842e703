"""The parts of a model's state that no Keras file keeps: random seed generators and the running
sums of the training metrics."""

from __future__ import annotations

import keras
import numpy as np

# The name Keras gives the state variable of every `keras.random.SeedGenerator`.
SEED_STATE_NAME = "seed_generator_state"


def seed_states(model: keras.Model) -> list[keras.Variable]:
    """The states of every random seed generator in the model, however deeply its layer is nested
    (Dropout, GaussianNoise, the Random* augmentation layers, inside sub-models or custom layers),
    in the model's own variable order. No Keras file keeps them."""
    return [variable for variable in model.variables if variable.name == SEED_STATE_NAME]


def capture_random_state(model: keras.Model) -> list[list[int]]:
    """The seed generators' states, as plain integers."""
    return [np.asarray(state.value).tolist() for state in seed_states(model)]


def restore_random_state(model: keras.Model, values: list[list[int]]) -> None:
    """Put back the seed generators' states captured by `capture_random_state`."""
    states = seed_states(model)
    if len(states) != len(values):
        raise ValueError(f"checkpoint has {len(values)} seed states, model {len(states)}")
    for state, value in zip(states, values):
        state.assign(np.asarray(value, dtype=state.dtype))


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
