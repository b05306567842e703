"""The worker's end of its link to the driver, and the chief's checkpoint writer that commits
through it: the driver, which holds the run's lock (an flock, or the fenced lease of a store), is
the only process that writes to the run."""

from __future__ import annotations

import os
import queue
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import keras

from trainflow.checkpoints.state import ResumeState
from trainflow.checkpoints.writer import CheckpointWriter
from trainflow.paths import RunPaths


class DriverLink:
    """The connection to the driver: messages sent from any thread, and questions whose answer a
    thread of its own receives. The driver's end closing ends the process at once (it must not
    outlive the holder of the run's lock), unless the worker has said how it ended."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.sending = threading.Lock()
        self.answers: queue.Queue = queue.Queue()
        self.ended = False
        threading.Thread(target=self._receive, daemon=True).start()

    def send(self, *message: object) -> None:
        with self.sending:
            self.connection.send(message)

    def ask(self, *question: object) -> object:
        """Send `question` and wait for the driver's answer (one question at a time)."""
        self.send(*question)
        return self.answers.get()

    def end(self, *message: object) -> None:
        """Send the last message: the driver may close its end from now on."""
        self.ended = True
        self.send(*message)

    def _receive(self) -> None:
        try:
            while True:
                self.answers.put(self.connection.recv())
        except (EOFError, OSError):
            if not self.ended:
                os._exit(1)  # the driver is gone: nothing this process does is anyone's any more


class RelayedCheckpointWriter(CheckpointWriter):
    """The chief's `CheckpointWriter`: it makes the checkpoint's weights file (in the background,
    as the writer does) and sends it, with the best epoch's weights file when that is new, to the
    driver, which commits them to the run; the state committed is the driver's answer. Nothing is
    written to the run here."""

    def __init__(
        self, model: keras.Model, shadow: keras.Model, paths: RunPaths, keep: int, link: DriverLink
    ) -> None:
        super().__init__(model, shadow, paths, keep)
        self.link = link
        self.best_sent: str | None = None

    def _write(self, values: list, state: ResumeState) -> None:
        best = None
        if state.best_checkpoint is not None and state.best_checkpoint != self.best_sent:
            best = Path(state.best_checkpoint).read_bytes()  # ModelCheckpoint wrote it here
            self.best_sent = state.best_checkpoint
        weights = self.layout.content(values)
        answer = self.link.ask("checkpoint", state.model_dump(mode="json"), weights, best)
        self.committed = ResumeState.model_validate(answer)
