"""Keras callbacks that make `fit` resumable: state that survives a restart, logging, fault injection."""

from __future__ import annotations

import logging
from pathlib import Path

import keras

from trainflow.checkpoints import EarlyStoppingState, ResumeState, write_checkpoint

logger = logging.getLogger("trainflow.train")


class InjectedFailure(RuntimeError):
    """Raised on purpose by `FailAfterEpoch` to demonstrate retry and resume."""


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` that starts from saved state instead of resetting its patience on resume."""

    def __init__(self, initial_state: EarlyStoppingState, **kwargs) -> None:
        super().__init__(**kwargs)
        self.initial_state = initial_state

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        self.wait = self.initial_state.wait
        self.best = self.initial_state.best
        self.best_epoch = self.initial_state.best_epoch

    def state(self) -> EarlyStoppingState:
        best = None if self.best is None else float(self.best)
        return EarlyStoppingState(wait=self.wait, best=best, best_epoch=self.best_epoch)


class ResumeCheckpoint(keras.callbacks.Callback):
    """Commit a resume checkpoint at the end of every epoch.

    Must come after `ModelCheckpoint` and `EarlyStopping` in the callback list, so that the state
    it saves includes their decisions for the epoch.
    """

    def __init__(
        self,
        resume_dir: Path,
        initial_state: ResumeState,
        best_checkpoint: keras.callbacks.ModelCheckpoint,
        early_stopping: ResumableEarlyStopping,
    ) -> None:
        super().__init__()
        self.resume_dir = resume_dir
        self.state = initial_state
        self.best_checkpoint = best_checkpoint
        self.early_stopping = early_stopping

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        history = {key: [*values] for key, values in self.state.history.items()}
        for key, value in (logs or {}).items():
            history.setdefault(key, []).append(float(value))
        best_val_loss = self.best_checkpoint.best
        improved = best_val_loss is not None and best_val_loss != self.state.best_val_loss
        if improved:  # ModelCheckpoint wrote this epoch's file (epochs are 1-based in its names)
            best_path = str(self.best_checkpoint.filepath).format(epoch=epoch + 1)
            best_update = {"best_checkpoint": best_path, "best_epoch": epoch + 1}
        else:
            best_update = {}
        self.state = self.state.model_copy(
            update={
                "epochs_done": epoch + 1,
                "optimizer_iterations": int(self.model.optimizer.iterations.numpy()),
                "history": history,
                "early_stopping": self.early_stopping.state(),
                "best_val_loss": None if best_val_loss is None else float(best_val_loss),
                "stopped_early": bool(self.model.stop_training),
                **best_update,
            }
        )
        write_checkpoint(self.model, self.resume_dir, self.state)


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch (Keras's own progress bar writes to stdout, which `--json` keeps clean)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        metrics = " ".join(f"{key}={value:.4f}" for key, value in sorted((logs or {}).items()))
        logger.info("Epoch %d/%d: %s", epoch + 1, self.epochs, metrics)


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
