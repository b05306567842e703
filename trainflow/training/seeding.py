"""Building a model whose initial weights no other thread's random draws can change."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def private_default_seeds(seed: int) -> Iterator[None]:
    """While the calling thread builds a model, the default seeds Keras draws for initializers and
    seed generators (`random.randint` of Python's shared generator) come from a generator of this
    thread's own, seeded with `seed`; other threads keep the shared one.

    Other threads of the process draw from the shared generator too (Prefect's event loop thread
    does, for its websocket keepalive pings): one draw of theirs in the middle of building would
    shift every seed after it, and a run would not be deterministic.
    """
    owner = threading.get_ident()
    private = random.Random(seed)
    shared_randint = random.randint

    def randint(low: int, high: int) -> int:
        generator = private.randint if threading.get_ident() == owner else shared_randint
        return generator(low, high)

    random.randint = randint
    try:
        yield
    finally:
        random.randint = shared_randint
