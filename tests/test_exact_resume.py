"""Step-level, exact resume: a run SIGKILLed mid-epoch continues at the next batch and ends with
the same weights and history, bit for bit, as a run that was never interrupted."""

import json
import logging
import signal
import subprocess
import sys

import pytest

from tasks.prepare_data import prepare_data
from tasks.train_model import train_model
from trainflow.checkpoints.compare import differing_arrays
from trainflow.checkpoints.store import checkpoint_files, load_latest_checkpoint
from trainflow.config import RunConfig
from trainflow.paths import ArtifactPaths
from trainflow.training.pipeline import epoch_order

STEPS_PER_EPOCH = 9  # 280 training examples in batches of 32

KILL_IN_SUBPROCESS = """
import json, sys
from tasks.prepare_data import prepare_data
from tasks.train_model import train_model
from trainflow.config import RunConfig
from trainflow.paths import ArtifactPaths
config = RunConfig.model_validate_json(sys.argv[1])
root = ArtifactPaths.at(config.artifacts)
train_model(config, prepare_data(config.source, config.split, root), root.run(config.run_name))
"""


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


def final_weights(paths, result):
    return checkpoint_files(paths.resume_dir, result.optimizer_iterations)[0]


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    assert epoch_order(3, 1, 50).tolist() == epoch_order(3, 1, 50).tolist()
    assert epoch_order(3, 1, 50).tolist() != epoch_order(3, 2, 50).tolist()
    assert sorted(epoch_order(3, 1, 50).tolist()) == list(range(50))


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run_bitwise(
    model, idx_dir, artifacts, caplog
):
    root = ArtifactPaths.at(artifacts)
    reference_config = deterministic_config(idx_dir, artifacts, model, "reference")
    data = prepare_data(reference_config.source, reference_config.split, root)
    reference = train_model(reference_config, data, root.run("reference"))

    kill_step = 2 * STEPS_PER_EPOCH + 7  # epoch 3, batch 7; last checkpoint at global step 25
    killed_config = deterministic_config(
        idx_dir, artifacts, model, "killed", kill_at_step=kill_step
    )
    completed = subprocess.run(
        [sys.executable, "-c", KILL_IN_SUBPROCESS, killed_config.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-2000:]
    paths = root.run("killed")
    checkpoint = load_latest_checkpoint(paths.resume_dir, paths.quarantine_dir)
    assert (checkpoint.global_step, checkpoint.epochs_done, checkpoint.step_in_epoch) == (25, 2, 7)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainflow"):
        resumed = train_model(killed_config, data, paths)
    assert "epoch 3, step 7 of the epoch, global step 25" in caplog.text
    assert caplog.text.count("First step after the resume done (global step 26)") == 1
    assert "Epoch 2/4" not in caplog.text and "Epoch 3/4" in caplog.text
    assert resumed.resumed_from == 2
    assert resumed.optimizer_iterations == reference.optimizer_iterations == 4 * STEPS_PER_EPOCH
    assert resumed.history == reference.history
    assert resumed.best_epoch == reference.best_epoch
    reference_final = final_weights(root.run("reference"), reference)
    assert differing_arrays(final_weights(paths, resumed), reference_final) == []
    assert differing_arrays(resumed.best_checkpoint, reference.best_checkpoint) == []


def test_interrupted_epoch_is_not_retrained_from_its_start(idx_dir, artifacts):
    """The resumed process trains only the batches after the checkpoint: steps done and checkpointed
    are never redone."""
    root = ArtifactPaths.at(artifacts)
    config = deterministic_config(idx_dir, artifacts, "mlp", "steps", kill_at_step=12)
    data = prepare_data(config.source, config.split, root)
    completed = subprocess.run(
        [sys.executable, "-c", KILL_IN_SUBPROCESS, config.model_dump_json()],
        capture_output=True,
        timeout=300,
    )
    assert completed.returncode == -signal.SIGKILL
    paths = root.run("steps")
    marker = json.loads(paths.kill_marker(12).read_text())
    assert marker["killed_at_step"] == 12
    before = load_latest_checkpoint(paths.resume_dir, paths.quarantine_dir)
    assert before.global_step == 10  # checkpoint_every=5; the kill came 2 steps later
    result = train_model(config, data, paths)
    trained_steps = result.optimizer_iterations - before.global_step
    assert trained_steps == 4 * STEPS_PER_EPOCH - 10
