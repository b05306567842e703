"""Step-level, exact resume: a run SIGKILLed mid-epoch continues at the next batch and ends with
the same weights and history, bit for bit, as a run that was never interrupted.

With deterministic training a restart from step 0 would end with the same weights too, so every
test also checks the step the run resumed from and counts the steps the resumed process trained.
"""

import json
import logging
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from examples.datasets import write_rgb_image_folder
from tasks.prepare_data import prepare_data
from tasks.train_model import train_model
from tests.checkpoints_on_disk import (
    final_checkpoint,
    interrupted_writes,
    newest_complete_checkpoint,
)
from tests.conftest import synthetic_images, write_idx_pair
from trainflow.checkpoints.compare import differing_arrays
from trainflow.checkpoints.store import checkpoint_files
from trainflow.config import RunConfig
from trainflow.paths import ArtifactPaths
from trainflow.training.callbacks.faults import KILL_WITHOUT_FLUSH
from trainflow.training.callbacks.monitoring import FirstResumedStep
from trainflow.training.pipeline import epoch_order

STEPS_PER_EPOCH = 9  # 280 training examples in batches of 32
TOTAL_STEPS = 4 * STEPS_PER_EPOCH

KILL_IN_SUBPROCESS = """
import json, sys
from tasks.prepare_data import prepare_data
from tasks.train_model import train_model
from examples.datasets import write_rgb_image_folder
from tests.conftest import synthetic_images, write_idx_pair
from trainflow.config import RunConfig
from trainflow.paths import ArtifactPaths
config = RunConfig.model_validate_json(sys.argv[1])
root = ArtifactPaths.at(config.artifacts)
train_model(config, prepare_data(config.source, config.preparation, root), root.run(config.run_name))
"""

# The same, with the write of the checkpoint at the kill step held once its weights are in place,
# before its manifest, for as long as the process lives; training goes on only once the write is
# held. A kill that does not wait lands in the middle of that write every time (a polite one would
# wait forever).
KILL_DURING_CHECKPOINT_WRITE = (
    """
import json, sys, threading
from trainflow.checkpoints import writer
from trainflow.storage.artifacts import Storage
kill_step = json.loads(sys.argv[1])["kill_at_step"]
held = threading.Event()
write_json, commit = Storage.write_json, writer.CheckpointWriter.commit
def held_write_manifest(self, path, data):
    if path.parent.name == "resume" and data["global_step"] == kill_step:
        held.set()
        threading.Event().wait()
    write_json(self, path, data)
def commit_until_held(self, state):
    commit(self, state)
    if state.global_step == kill_step:
        held.wait()
Storage.write_json, writer.CheckpointWriter.commit = held_write_manifest, commit_until_held
"""
    + KILL_IN_SUBPROCESS
)


class StepsTrained(keras.callbacks.Callback):
    """Counts the training steps run in this process: one per batch begun. (A batch-end hook would
    make Keras run every batch-end hook on the training thread, unlike a real run.)"""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_train_batch_begin(self, batch: int, logs=None) -> None:
        self.count += 1


def deterministic_config(idx_dir, artifacts, model, run_name, **options):
    return RunConfig(
        **{
            "dataset": f"idx:{idx_dir}",
            "model": model,
            "epochs": 4,
            "patience": 10,
            "checkpoint_every": 5,
            "deterministic": True,
            "artifacts": artifacts,
            "run_name": run_name,
            **options,
        }
    )


def kill_in_subprocess(config, script=KILL_IN_SUBPROCESS, environment=None):
    """Train `config` in a new process (`environment`: variables to add), which its
    `kill_at_step` must kill."""
    completed = subprocess.run(
        [sys.executable, "-c", script, config.model_dump_json()],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(environment or {})},
    )
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-2000:]


def train_counting_steps(config, data, paths):
    """Train `config` in this process: the result, and the number of steps this process trained."""
    steps = StepsTrained()
    return train_model(config, data, paths, extra_callbacks=[steps]), steps.count


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    assert epoch_order(3, 1, 50).tolist() == epoch_order(3, 1, 50).tolist()
    assert epoch_order(3, 1, 50).tolist() != epoch_order(3, 2, 50).tolist()
    assert sorted(epoch_order(3, 1, 50).tolist()) == list(range(50))


def two_class_idx_dir(directory):
    """idx_dir's images with two classes: the first five square places and the last five."""
    images, labels = synthetic_images(400, seed=1)
    write_idx_pair(directory, "t10k", images, (labels >= 5).astype(np.uint8))
    return directory


# The builders add augmentation layers, Dropout nested in sub-models, BatchNormalization, a custom
# layer, GaussianNoise, SpatialDropout and a learning-rate schedule: random state anywhere in a
# model, and the optimizer's own, must resume exactly; and every head: logits, one-hot labels, one
# logit for two classes (with Rescaling inside: raw pixels), a subclassed model, and a frozen
# keras.applications backbone.
@pytest.mark.parametrize(
    ("model", "classes"),
    [
        ("mlp", 10),
        ("cnn", 10),
        ("examples.small_convnet:build_model", 10),
        ("tests.resume_builders:scheduled_noisy", 10),
        ("examples.tutorial_models:quickstart", 10),
        # Heads and model styles that add no state of their own to a checkpoint (each trained,
        # evaluated and served in test_model_heads.py): resumed bit for bit under `-m slow`.
        pytest.param("examples.tutorial_models:simple_convnet", 10, marks=pytest.mark.slow),
        pytest.param("examples.tutorial_models:from_scratch", 2, marks=pytest.mark.slow),
        pytest.param("examples.tutorial_models:subclassed", 10, marks=pytest.mark.slow),
        ("examples.tutorial_models:frozen_mobilenet", 3),  # non-trainable weights and BN state
    ],
)
def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run_bitwise(
    model, classes, idx_dir, tmp_path, artifacts, caplog
):
    options = {}
    if classes == 2:
        idx_dir = two_class_idx_dir(tmp_path / "two-classes")
    if classes == 3:  # a keras.applications backbone: RGB images of 32x32 at least
        folder = write_rgb_image_folder(tmp_path / "colours", per_class=134, size=(32, 32))
        options = {"dataset": f"images:{folder}"}  # 402 images: 9 steps an epoch too
    root = ArtifactPaths.at(artifacts)
    reference_config = deterministic_config(idx_dir, artifacts, model, "reference", **options)
    data = prepare_data(reference_config.source, reference_config.preparation, root)
    reference = train_model(reference_config, data, root.run("reference"))

    kill_step = 2 * STEPS_PER_EPOCH + 7  # epoch 3, batch 7; last checkpoint at global step 25
    killed_config = deterministic_config(
        idx_dir, artifacts, model, "killed", kill_at_step=kill_step, **options
    )
    kill_in_subprocess(killed_config)
    paths = root.run("killed")
    checkpoint = newest_complete_checkpoint(paths.resume_dir)
    assert (checkpoint.global_step, checkpoint.epochs_done, checkpoint.step_in_epoch) == (25, 2, 7)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainflow"):
        resumed, steps_trained = train_counting_steps(killed_config, data, paths)
    assert "epoch 3, step 7 of the epoch, global step 25" in caplog.text
    assert caplog.text.count(FirstResumedStep.MESSAGE % 26) == 1
    assert "Epoch 2/4" not in caplog.text and "Epoch 3/4" in caplog.text
    assert (resumed.resumed_from, resumed.resumed_from_step) == (2, 25)
    assert steps_trained == TOTAL_STEPS - 25
    assert resumed.optimizer_iterations == reference.optimizer_iterations == TOTAL_STEPS
    assert resumed.history == reference.history
    assert resumed.best_epoch == reference.best_epoch
    reference_final = final_checkpoint(root.run("reference"))
    assert differing_arrays(final_checkpoint(paths), reference_final) == []
    assert (
        differing_arrays(
            root.storage.path(resumed.best_checkpoint), root.storage.path(reference.best_checkpoint)
        )
        == []
    )


def test_interrupted_epoch_is_not_retrained_from_its_start(idx_dir, artifacts):
    """The resumed process trains only the batches after the checkpoint: steps done and checkpointed
    are never redone."""
    root = ArtifactPaths.at(artifacts)
    config = deterministic_config(idx_dir, artifacts, "mlp", "steps", kill_at_step=12)
    data = prepare_data(config.source, config.preparation, root)
    kill_in_subprocess(config)
    paths = root.run("steps")
    marker = json.loads(paths.kill_marker(12).read_text())
    assert marker["killed_at_step"] == 12
    before = newest_complete_checkpoint(paths.resume_dir)
    assert before.global_step == 10  # checkpoint_every=5; the kill came 2 steps later
    result, steps_trained = train_counting_steps(config, data, paths)
    assert result.resumed_from_step == 10
    assert steps_trained == TOTAL_STEPS - 10


def test_kill_during_a_checkpoint_write_resumes_from_the_newest_complete_checkpoint(
    idx_dir, artifacts, caplog
):
    """A crash does not wait for the checkpoint being written in the background: killed after the
    weights of step 25's checkpoint and before its manifest, the run resumes from step 20, the
    newest checkpoint complete on disk, sets the orphaned weights aside, and still ends bit for
    bit where the uninterrupted run does."""
    root = ArtifactPaths.at(artifacts)
    reference_config = deterministic_config(idx_dir, artifacts, "mlp", "reference")
    data = prepare_data(reference_config.source, reference_config.preparation, root)
    reference = train_model(reference_config, data, root.run("reference"))

    kill_step = 25  # a step checkpoint's, so that its write is in flight at the kill
    config = deterministic_config(idx_dir, artifacts, "mlp", "crashed", kill_at_step=kill_step)
    kill_in_subprocess(config, KILL_DURING_CHECKPOINT_WRITE, {KILL_WITHOUT_FLUSH: "1"})
    paths = root.run("crashed")
    half_written, _ = checkpoint_files(paths.resume_dir, kill_step)
    assert interrupted_writes(paths) == [half_written.name]
    complete = newest_complete_checkpoint(paths.resume_dir)
    assert complete.global_step == kill_step - config.checkpoint_every

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainflow"):
        resumed, steps_trained = train_counting_steps(config, data, paths)
    assert resumed.resumed_from_step == complete.global_step
    assert caplog.text.count(FirstResumedStep.MESSAGE % (complete.global_step + 1)) == 1
    assert steps_trained == TOTAL_STEPS - complete.global_step
    assert (paths.quarantine_dir / half_written.name).is_file()
    assert resumed.history == reference.history
    reference_final = final_checkpoint(root.run("reference"))
    assert differing_arrays(final_checkpoint(paths), reference_final) == []
    assert (
        differing_arrays(
            root.storage.path(resumed.best_checkpoint), root.storage.path(reference.best_checkpoint)
        )
        == []
    )
