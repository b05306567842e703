"""Faults injected on purpose, for demos and tests of retry and crash recovery."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

import keras

from trainflow.checkpoints.writer import CheckpointWriter

logger = logging.getLogger("trainflow.train")


class InjectedFailure(RuntimeError):
    """Raised on purpose by `FailAfterEpoch` to demonstrate retry and resume."""


class FailAfterEpoch(keras.callbacks.Callback):
    """Raise `InjectedFailure` right after epoch `epoch` (1-based) has been checkpointed.

    Goes last in the callback list. A resumed run starts after that epoch, so it never fails again.
    """

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if epoch + 1 == self.epoch:
            raise InjectedFailure(f"injected failure after epoch {self.epoch} (--fail-at-epoch)")


# In a process's environment (any value), this makes `--kill-at-step` kill as a crash would:
# without waiting for the checkpoint write in flight. Tests and the recovery benchmark set it; the
# demo does not (its polite kill shows the checkpoints committed up to the step in use).
KILL_WITHOUT_FLUSH = "TRAINFLOW_KILL_WITHOUT_FLUSH"


class KillAtStep(keras.callbacks.Callback):
    """SIGKILL this process right after global step `step`, and only once per run: `record` keeps
    a record that it happened (the run's kill marker), and a run that has one (`already_killed`),
    which may train that step again once resumed, goes on.

    The kill is polite unless KILL_WITHOUT_FLUSH is set: it waits for `writer` first, so that the
    checkpoints committed up to the step are on disk. With it set the process dies at once, maybe
    in the middle of a background checkpoint write, whose files the rerun then sets aside. (Kills
    at any moment of a run are the crash harness's: tests/test_crash_anywhere.py.)"""

    def __init__(
        self,
        step: int,
        writer: CheckpointWriter,
        record: Callable[[dict], object],
        already_killed: bool,
    ) -> None:
        super().__init__()
        self.step = step
        self.writer = writer
        self.record = record
        self.done = already_killed
        self.flush = KILL_WITHOUT_FLUSH not in os.environ

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        # Before the next step: after `StepCheckpoint` has committed the finished ones.
        if int(self.model.optimizer.iterations.numpy()) == self.step and not self.done:
            if self.flush:
                self.writer.flush()
            self.record({"killed_at_step": self.step, "pid": os.getpid()})
            self.done = True
            how = "" if self.flush else f", {KILL_WITHOUT_FLUSH}: checkpoint writes not waited for"
            logger.warning(
                "Killing the training process at step %d (--kill-at-step%s)", self.step, how
            )
            os.kill(os.getpid(), signal.SIGKILL)
