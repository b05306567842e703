"""Training, persisting and evaluating as plain functions, without Prefect."""

import json
import logging

import h5py
import keras
import numpy as np
import pytest

from tasks.evaluate_model import evaluate_model
from tasks.persist_model import persist_model
from tasks.persist_weights import persist_weights
from tasks.prepare_data import prepare_data
from tasks.train_model import train_model
from tests.conftest import STEPS_PER_EPOCH, synthetic_images, write_idx_pair
from trainflow.checkpoints.store import load_latest_checkpoint
from trainflow.data.preparation import data_fingerprint
from trainflow.data.prepared import read_split
from trainflow.errors import RunStateError
from trainflow.paths import ArtifactPaths
from trainflow.training.callbacks.faults import InjectedFailure


def test_training_checkpoints_every_epoch_and_keeps_the_best(run):
    config, data, paths = run
    result = train_model(config, data, paths)
    assert result.epochs_completed == 4 and result.resumed_from is None
    assert result.optimizer_iterations == 4 * STEPS_PER_EPOCH
    assert len(result.history["val_loss"]) == 4
    best_epoch = int(np.argmin(result.history["val_loss"])) + 1
    assert result.best_epoch == best_epoch
    # A key, the same on every machine: not this process's path to the file.
    best_name = f"save_model_{best_epoch:02d}.weights.h5"
    assert result.best_checkpoint == f"runs/{paths.name}/checkpoints/best/{best_name}"
    assert paths.storage.path(result.best_checkpoint) == paths.best_checkpoints_dir / best_name
    assert (paths.best_checkpoints_dir / best_name).is_file()
    resume_files = sorted(path.name for path in paths.resume_dir.iterdir())
    assert resume_files == [
        f"step-{epoch * STEPS_PER_EPOCH:09d}.{suffix}"
        for epoch in (2, 3, 4)
        for suffix in ("json", "weights.h5")
    ]
    assert json.loads(paths.training_result.read_text())["epochs_completed"] == 4


def test_failure_after_epoch_2_resumes_at_epoch_3_with_optimizer_state(run, caplog):
    config, data, paths = run
    with pytest.raises(InjectedFailure, match="after epoch 2"):
        train_model(config.model_copy(update={"fail_at_epoch": 2}), data, paths)
    checkpoint = load_latest_checkpoint(paths)
    assert checkpoint.epochs_done == 2 and checkpoint.step_in_epoch == 0
    assert checkpoint.global_step == 2 * STEPS_PER_EPOCH

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainflow"):
        result = train_model(config.model_copy(update={"fail_at_epoch": 2}), data, paths)
    assert (
        f"Resuming run unit from checkpoint step-{2 * STEPS_PER_EPOCH:09d}.weights.h5: epoch 3, "
        "step 0 of the epoch" in caplog.text
    )
    assert "Epoch 1/4" not in caplog.text and "Epoch 3/4" in caplog.text
    first_step = f"First step after the resume done (global step {2 * STEPS_PER_EPOCH + 1})"
    assert caplog.text.count(first_step) == 1
    assert result.resumed_from == 2 and result.epochs_completed == 4
    # The optimizer continued counting instead of restarting from 0 at epoch 3.
    assert result.optimizer_iterations == 4 * STEPS_PER_EPOCH
    assert len(result.history["loss"]) == 4


def test_finished_training_is_not_repeated(run):
    config, data, paths = run
    first = train_model(config, data, paths)
    again = train_model(config, data, paths)
    assert again.resumed_from == 4 and again.optimizer_iterations == first.optimizer_iterations
    assert again.history == first.history


def test_a_run_checkpointed_on_data_of_an_older_format_resumes_on_the_same_rows(run):
    """Data prepared again in a new format (the same rows under a new fingerprint) does not stop a
    run checkpointed before from resuming; data from another source still does."""
    config, data, paths = run
    with pytest.raises(InjectedFailure, match="after epoch 1"):
        train_model(config.model_copy(update={"fail_at_epoch": 1}), data, paths)
    version_2 = data_fingerprint(data.source_sha256, config.preparation, version=2)
    manifests = sorted(paths.resume_dir.glob("step-*.json"))
    assert manifests and version_2 != data.fingerprint
    for manifest in manifests:  # as a run checkpointed before format 3 recorded its data
        state = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**state, "data_fingerprint": version_2}))
    result = train_model(config.model_copy(update={"epochs": 2}), data, paths)
    assert (result.resumed_from, result.epochs_completed) == (1, 2)

    for manifest in sorted(paths.resume_dir.glob("step-*.json")):
        state = json.loads(manifest.read_text())
        manifest.write_text(json.dumps({**state, "data_fingerprint": "0123456789abcdef"}))
    with pytest.raises(RunStateError, match="has checkpoints of data 0123456789abcdef"):
        train_model(config.model_copy(update={"epochs": 3}), data, paths)


def test_resuming_with_another_model_is_refused(run):
    config, data, paths = run
    train_model(config.model_copy(update={"epochs": 1}), data, paths)
    with pytest.raises(RunStateError, match="has checkpoints of model mlp, not model cnn"):
        train_model(config.model_copy(update={"model": "cnn"}), data, paths)


def test_early_stopping_keeps_its_patience_across_a_resume(run, tmp_path):
    config, _, paths = run
    # Labels unrelated to the images: validation loss soon stops improving, so training stops early.
    images, labels = synthetic_images(400, seed=1)
    write_idx_pair(tmp_path / "noise", "t10k", images, np.random.default_rng(0).permutation(labels))
    config = config.model_copy(
        update={"dataset": f"idx:{tmp_path / 'noise'}", "epochs": 30, "patience": 3}
    )
    data = prepare_data(config.source, config.preparation, ArtifactPaths.at(config.artifacts))
    uninterrupted = train_model(
        config, data, paths.model_copy(update={"run_dir": paths.run_dir.with_name("a")})
    )
    assert uninterrupted.stopped_early
    stop = uninterrupted.epochs_completed
    assert 3 < stop < 30
    interrupted_paths = paths.model_copy(update={"run_dir": paths.run_dir.with_name("b")})
    with pytest.raises(InjectedFailure):
        train_model(config.model_copy(update={"fail_at_epoch": stop - 1}), data, interrupted_paths)
    resumed = train_model(config, data, interrupted_paths)
    assert resumed.stopped_early and resumed.epochs_completed == stop


def test_persist_and_evaluate_the_saved_model(run):
    config, data, paths = run
    training = train_model(config, data, paths)
    weights = persist_weights(training, paths)
    persisted = persist_model(training, weights, paths)
    assert weights == paths.weights and weights.name.endswith(".weights.h5")
    with h5py.File(weights) as handle:
        assert "optimizer" in handle
    assert (persisted.saved_model / "saved_model.pb").is_file()
    evaluation = evaluate_model(persisted, training, data, paths)
    report = json.loads(paths.evaluation.read_text())
    assert report["num_examples"] == 80 == evaluation.num_examples
    assert report["accuracy"] == evaluation.accuracy > 0.5
    assert len(report["per_class_accuracy"]) == 10
    assert report["keras_model"] == str(paths.keras_model)
    assert report["weights"] == str(paths.weights)
    assert report["weights_model_loss"] == pytest.approx(report["loss"], rel=1e-5)
    loaded = keras.models.load_model(paths.keras_model)
    images, labels = read_split(data.paths.split("test"))
    keras_loss, keras_accuracy = loaded.evaluate(images, labels, verbose=0)
    assert report["loss"] == pytest.approx(keras_loss, rel=1e-5)
    assert report["accuracy"] == pytest.approx(keras_accuracy)
    best = keras.models.clone_model(loaded)
    best.load_weights(paths.storage.path(training.best_checkpoint))
    for saved, expected in zip(loaded.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(saved, expected)


def test_cnn_trains_and_persists(run):
    config, data, paths = run
    config = config.model_copy(update={"model": "cnn", "epochs": 1})
    training = train_model(config, data, paths)
    persisted = persist_model(training, persist_weights(training, paths), paths)
    assert keras.models.load_model(persisted.keras_model).name == "cnn"
