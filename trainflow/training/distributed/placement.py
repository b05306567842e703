"""Where a training process trains: alone, over its machine's devices (`MirroredStrategy`), or as
one worker of a group (`MultiWorkerMirroredStrategy`); and the strategies themselves, made before
TensorFlow runs anything in the process (devices and collectives cannot change after)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import tensorflow as tf

from trainflow.config import RunConfig
from trainflow.paths import RunPaths
from trainflow.results import Distribution

if TYPE_CHECKING:
    from trainflow.training.distributed.relay import DriverLink

# Without a GPU, `--distribute mirrored` splits the CPU into this many logical devices.
DEFAULT_CPU_DEVICES = 2


@dataclass(frozen=True)
class Placement:
    """This process's part in training: its strategy (None: plain `fit`), its rank among
    `workers` processes, and, for a worker process, its link to the driver (`link`, a
    `relay.DriverLink`) and the private scratch copy of the run it writes to (`written`): the
    driver commits what the chief (rank 0) sends it, and writes everything else of the run."""

    strategy: tf.distribute.Strategy | None = None
    rank: int = 0
    workers: int = 1
    written: RunPaths | None = None
    link: DriverLink | None = None

    @property
    def chief(self) -> bool:
        return self.rank == 0

    @property
    def own_loop(self) -> bool:
        """Whether training runs the step of `loop.ReplicatedFit` (`fit` fails across workers)."""
        return self.workers > 1

    def scope(self) -> contextlib.AbstractContextManager:
        """The strategy's scope, in which the model and its optimizer are built."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def distribution_of(config: RunConfig) -> Distribution:
    """How `config` spreads training, as results record it (GPUs are counted without starting
    TensorFlow's runtime; without one, a worker is one CPU replica)."""
    gpus = len(tf.config.list_physical_devices("GPU"))
    if config.workers > 1:
        strategy, replicas = "multi_worker_mirrored", config.workers * max(1, gpus)
    elif config.distribute == "mirrored":
        strategy = "mirrored"
        replicas = (
            min(config.devices or gpus, gpus) if gpus else config.devices or DEFAULT_CPU_DEVICES
        )
    else:
        strategy, replicas = "none", 1
    return Distribution(
        strategy=strategy,
        workers=config.workers,
        replicas=replicas,
        global_batch=config.batch_size,
        per_replica_batch=config.batch_size // replicas,
    )


def mirrored_strategy(devices: int | None) -> tf.distribute.MirroredStrategy:
    """`MirroredStrategy` over the first `devices` GPUs (None: all), or without a GPU over
    `devices` (default 2) logical CPU devices carved out of the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [f"/gpu:{index}" for index in range(len(gpus))][:devices]
        return tf.distribute.MirroredStrategy(names)
    count = devices or DEFAULT_CPU_DEVICES
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )
    return tf.distribute.MirroredStrategy([f"/cpu:{index}" for index in range(count)])


def multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The strategy of the worker `TF_CONFIG` names, with ring all-reduce: its order of additions
    is fixed, so `--deterministic` runs give the same weights every time."""
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def tf_config(addresses: list[str], rank: int) -> str:
    """The `TF_CONFIG` of worker `rank` of a group whose collective servers listen at
    `addresses` (`host:port`, by rank)."""
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": rank}})
