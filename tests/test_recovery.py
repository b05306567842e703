"""Damaged or missing checkpoints, and crashes after training: what a rerun does."""

import logging

import pytest

from tasks.evaluate_model import evaluate_model
from tasks.persist_model import persist_model
from tasks.persist_weights import persist_weights
from tasks.train_model import train_model
from tests.conftest import STEPS_PER_EPOCH
from trainflow.checkpoints.store import checkpoint_files, load_latest_checkpoint
from trainflow.training.callbacks.faults import InjectedFailure


def interrupted_after_epoch_3(run):
    """Train until the injected failure after epoch 3 of 4; checkpoints of epochs 1-3 remain."""
    config, data, paths = run
    with pytest.raises(InjectedFailure):
        train_model(config.model_copy(update={"fail_at_epoch": 3}), data, paths)
    return checkpoint_files(paths.resume_dir, 3 * STEPS_PER_EPOCH)


def damage_truncate(weights, manifest):
    weights.write_bytes(weights.read_bytes()[:1000])


def damage_garble(weights, manifest):
    manifest.write_text('{"global_step": 27, "epochs')


def damage_remove_manifest(weights, manifest):
    manifest.unlink()


@pytest.mark.parametrize("damage", [damage_truncate, damage_garble, damage_remove_manifest])
def test_damaged_newest_checkpoint_is_set_aside_and_the_previous_one_used(run, damage, caplog):
    config, data, paths = run
    weights, manifest = interrupted_after_epoch_3(run)
    damage(weights, manifest)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainflow"):
        result = train_model(config, data, paths)
    assert result.resumed_from == 2 and result.epochs_completed == 4
    assert "Set aside invalid checkpoint files" in caplog.text
    assert weights.name in caplog.text
    assert (paths.quarantine_dir / weights.name).is_file()
    assert f"from checkpoint step-{2 * STEPS_PER_EPOCH:09d}.weights.h5" in caplog.text


def test_leftover_temporary_of_an_interrupted_write_is_set_aside(run):
    _, _, paths = run
    weights, _ = interrupted_after_epoch_3(run)
    leftover = weights.with_name("step-000000036.tmp-4242.weights.h5")
    leftover.write_bytes(b"\x89HDF half")
    state = load_latest_checkpoint(paths)
    assert state.global_step == 3 * STEPS_PER_EPOCH
    assert (paths.quarantine_dir / leftover.name).is_file() and not leftover.exists()


def test_no_valid_checkpoint_starts_over_without_crashing(run, caplog):
    config, data, paths = run
    interrupted_after_epoch_3(run)
    for manifest in paths.resume_dir.glob("*.json"):
        manifest.write_text("garbage")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainflow"):
        result = train_model(config, data, paths)
    assert "No valid checkpoint left" in caplog.text
    assert result.resumed_from is None and result.epochs_completed == 4
    assert result.optimizer_iterations == 4 * STEPS_PER_EPOCH
    assert len(list(paths.quarantine_dir.iterdir())) == 6


def test_checkpoints_beyond_the_newest_k_are_removed(run):
    config, data, paths = run
    config = config.model_copy(update={"checkpoint_every": 4, "keep_checkpoints": 2})
    train_model(config, data, paths)
    steps = sorted(int(path.name[5:14]) for path in paths.resume_dir.glob("*.json"))
    assert steps == [32, 4 * STEPS_PER_EPOCH]
    assert len(list(paths.resume_dir.iterdir())) == 4


def test_rerun_after_training_repeats_only_unfinished_stages(run, caplog):
    config, data, paths = run
    training = train_model(config, data, paths)
    weights = persist_weights(training, paths)
    weights_time = weights.stat().st_mtime_ns
    # A crash during persist_model: its outputs never appeared.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainflow"):
        training_again = train_model(config, data, paths)
        assert persist_weights(training_again, paths) == weights
        persisted = persist_model(training_again, weights, paths)
        evaluate_model(persisted, training_again, data, paths)
    assert "Training of run unit already finished after 4 epochs" in caplog.text
    assert "Epoch " not in caplog.text
    assert "Skipping persist_weights" in caplog.text
    assert "Skipping persist_model" not in caplog.text
    assert weights.stat().st_mtime_ns == weights_time
    assert paths.keras_model.is_file() and paths.evaluation.is_file()
