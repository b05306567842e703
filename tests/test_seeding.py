"""A model's initial weights depend on the seed alone, even while other threads draw from
Python's shared random generator (as Prefect's event loop thread does in every run)."""

import random
import threading

import keras

from trainflow.training.models import build_model
from trainflow.training.seeding import private_default_seeds


def initial_weights(kind: str, seed: int) -> list:
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    with private_default_seeds(seed):
        model = build_model(kind, (28, 28), 10)
    return [weights.tobytes() for weights in model.get_weights()]


def test_other_threads_drawing_random_numbers_do_not_change_the_initial_weights():
    quiet = initial_weights("cnn", seed=3)
    stop = threading.Event()

    def draw_all_the_time() -> None:
        while not stop.is_set():
            random.randint(1, 10**9)
            random.getrandbits(32)

    drawer = threading.Thread(target=draw_all_the_time)
    drawer.start()
    try:
        busy = [initial_weights("cnn", seed=3) for _ in range(3)]
    finally:
        stop.set()
        drawer.join()
    assert all(weights == quiet for weights in busy)
    assert initial_weights("cnn", seed=4) != quiet


def test_the_shared_generator_is_back_after_building():
    shared = random.randint
    with private_default_seeds(1):
        assert random.randint is not shared
    assert random.randint is shared
