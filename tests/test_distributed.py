"""Data-parallel training (README, "Train on several devices or machines"): two worker processes
under MultiWorkerMirroredStrategy with trainflow's own step, and Keras's `fit` under
MirroredStrategy over two logical CPU devices, on the real MNIST test split; a worker SIGKILLed
mid-epoch brings the group down, and the retried task resumes at the newest checkpoint's step and
ends bit for bit where the uninterrupted group ended."""

import json
import math
import os
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.stack.prefect_server import free_port
from tests.conftest import SHARED_MNIST_TEST_SPLIT, needs_shared_mnist
from tests.ray_head import ray_head
from tests.test_cli import trainflow
from tests.test_cli_errors import EXIT_USER_ERROR, assert_one_line_error
from trainflow.checkpoints.compare import differing_arrays
from trainflow.contract import ModelContract
from trainflow.training.callbacks.faults import KILL_WITHOUT_FLUSH
from trainflow.training.distributed.loop import ReplicatedFit
from trainflow.training.distributed.placement import Placement

EPOCHS = 5
# The runs compared with the uninterrupted group train its first epochs only, and are compared
# with its resume checkpoint at their last step (weights and optimizer state, bit for bit).
SHORT_EPOCHS = 2
STEPS_PER_EPOCH = 219  # 7,000 training examples of the split in batches of 32
CHECKPOINT_EVERY = 50
KILL_AT_STEP = STEPS_PER_EPOCH + 61  # in epoch 2; the newest checkpoint then is step 250's
NEWEST_CHECKPOINT = 250
DATASET = f"idx:{SHARED_MNIST_TEST_SPLIT}"
WORKER_MODULE = "trainflow.training.distributed.worker"

pytestmark = needs_shared_mnist


def run_json(completed: subprocess.CompletedProcess) -> dict:
    return json.loads(completed.stdout)


def training_of(summary: dict) -> dict:
    return json.loads((Path(summary["run_dir"]) / "training.json").read_text())


def assert_no_worker_left() -> None:
    found = subprocess.run(["pgrep", "-f", WORKER_MODULE], capture_output=True, text=True)
    assert found.stdout == "", f"worker processes outlived their run: {found.stdout}"


def assert_same_state_as_the_uninterrupted_group(
    run_dir: Path, two_workers: subprocess.CompletedProcess
) -> None:
    """The run's last resume checkpoint equals, bit for bit, the uninterrupted group's at the same
    step: every weight and the optimizer's state."""
    step = SHORT_EPOCHS * STEPS_PER_EPOCH
    checkpoint = f"checkpoints/resume/step-{step:09d}.weights.h5"
    straight = Path(run_json(two_workers)["run_dir"]) / checkpoint
    assert differing_arrays(run_dir / checkpoint, straight) == []


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """One artifacts root for the module: the split is prepared once."""
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def two_workers(artifacts, prefect_home) -> subprocess.CompletedProcess:
    """The README's command: two workers, 5 epochs, deterministic, uninterrupted."""
    environment = {**os.environ, "PREFECT_HOME": str(prefect_home / "cli")}
    environment.pop("PREFECT_API_URL", None)
    return trainflow(
        "run", "--dataset", DATASET, "--workers", 2, "--epochs", EPOCHS, "--deterministic",
        "--keep-checkpoints", EPOCHS, "--artifacts", artifacts, "--run-name", "two-workers",
        "--json", env=environment,
    )  # fmt: skip


def test_two_workers_train_as_one_process_does_and_say_so(two_workers):
    summary = run_json(two_workers)
    assert summary["test_accuracy"] >= 0.90
    assert summary["epochs_completed"] == EPOCHS
    expected = {
        "strategy": "multi_worker_mirrored",
        "workers": 2,
        "replicas": 2,
        "global_batch": 32,
        "per_replica_batch": 16,
    }
    assert summary["distribution"] == expected
    record = json.loads((Path(summary["run_dir"]) / "run.json").read_text())
    assert record["distribution"] == expected
    training = training_of(summary)
    assert training["optimizer_iterations"] == EPOCHS * STEPS_PER_EPOCH
    assert all(math.isfinite(value) for values in training["history"].values() for value in values)
    # The chief's log lines reach the driver; the other worker's INFO lines do not.
    assert "[worker 0] Worker 0 of 2: MultiWorkerMirroredStrategy, 2 replicas in sync" in (
        two_workers.stderr
    )
    assert "[worker 0] Epoch 5/5" in two_workers.stderr
    assert "[worker 1] Epoch" not in two_workers.stderr
    assert_no_worker_left()


def test_mirrored_over_two_logical_cpus_trains_with_finite_metrics_like_the_workers(
    artifacts, two_workers, cli_environment
):
    completed = trainflow(
        "run", "--dataset", DATASET, "--distribute", "mirrored", "--epochs", EPOCHS,
        "--deterministic", "--artifacts", artifacts, "--run-name", "mirrored", "--json",
        env=cli_environment,
    )  # fmt: skip
    mirrored = run_json(completed)
    assert "Worker 0 of 1: MirroredStrategy, 2 replicas in sync" in completed.stderr
    assert mirrored["test_accuracy"] >= 0.90
    assert mirrored["distribution"]["strategy"] == "mirrored"
    assert mirrored["distribution"]["replicas"] == 2
    history = training_of(mirrored)["history"]
    # NaN losses or metrics under MirroredStrategy (tensorflow#90686, keras-team/keras#21467):
    # every epoch's, not only the last.
    assert all(math.isfinite(value) for values in history.values() for value in values)
    # Keras's `fit` over two devices and our step over two workers see the same global batches
    # from the same initial weights: their learning curves agree.
    workers = training_of(run_json(two_workers))["history"]
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(history[name], workers[name], rtol=0.02, atol=0.005)


def test_a_killed_worker_stops_the_group_and_the_retry_resumes_at_the_step_bit_for_bit(
    two_workers, s3_store, bucket, cli_environment, tmp_path
):
    """With the run in an object store: the driver, the holder of the run's lease, commits every
    checkpoint the chief makes; the workers write nothing there."""
    killed = trainflow(
        "run", "--dataset", DATASET, "--workers", 2, "--epochs", SHORT_EPOCHS, "--deterministic",
        "--checkpoint-every", CHECKPOINT_EVERY, "--kill-at-step", KILL_AT_STEP,
        "--artifacts", f"s3://{bucket}/team", "--run-name", "killed", "--json",
        env={**cli_environment, **s3_store.environment, KILL_WITHOUT_FLUSH: "1"},
    )  # fmt: skip
    summary = run_json(killed)
    assert summary["run_dir"] == f"s3://{bucket}/team/runs/killed"
    run_dir = s3_store.download(bucket, "team/runs/killed", tmp_path / "killed")
    marker = json.loads((run_dir / f"killed-at-step-{KILL_AT_STEP}.json").read_text())
    assert marker["killed_at_step"] == KILL_AT_STEP
    assert "worker 1 of 2 died (signal SIGKILL)" in killed.stderr
    # Resumed at the newest checkpoint committed before the kill: no checkpointed step redone.
    assert summary["resumed_from_step"] == NEWEST_CHECKPOINT
    assert f"First step after the resume done (global step {NEWEST_CHECKPOINT + 1})" in (
        killed.stderr
    )
    assert_same_state_as_the_uninterrupted_group(run_dir, two_workers)
    training = json.loads((run_dir / "training.json").read_text())
    uninterrupted = training_of(run_json(two_workers))["history"]
    assert training["history"] == {
        key: values[:SHORT_EPOCHS] for key, values in uninterrupted.items()
    }
    # Every checkpoint was committed under the run's lease (the driver's), and TensorBoard's
    # epochs reached the store.
    generation = json.loads((run_dir / "run.json").read_text())["lock_generation"]
    manifests = list((run_dir / "checkpoints/resume").glob("step-*.json"))
    assert manifests and generation is not None
    assert {json.loads(path.read_text())["lock_generation"] for path in manifests} == {generation}
    assert list((run_dir / "tensorboard/validation").glob("events.out.tfevents.*"))
    assert_no_worker_left()


@pytest.fixture(scope="module")
def ray_cluster() -> str:
    with ray_head() as address:
        yield address


def test_workers_on_a_ray_cluster_end_as_local_ones_bit_for_bit(
    artifacts, two_workers, ray_cluster, cli_environment
):
    """The same two workers as Ray actors of a real Ray head, found through RAY_ADDRESS."""
    on_ray = trainflow(
        "run", "--dataset", DATASET, "--workers", 2, "--epochs", SHORT_EPOCHS, "--deterministic",
        "--artifacts", artifacts, "--run-name", "on-ray", "--json",
        env={**cli_environment, "RAY_ADDRESS": ray_cluster},
    )  # fmt: skip
    summary = run_json(on_ray)
    assert summary["test_accuracy"] >= 0.90
    assert f"[worker 0] Epoch {SHORT_EPOCHS}/{SHORT_EPOCHS}" in on_ray.stderr
    assert_same_state_as_the_uninterrupted_group(Path(summary["run_dir"]), two_workers)


@pytest.mark.slow
def test_a_killed_ray_actor_stops_the_group_and_the_retry_resumes_at_the_step(
    artifacts, ray_cluster, cli_environment
):
    killed = trainflow(
        "run", "--dataset", DATASET, "--workers", 2, "--epochs", 2, "--deterministic",
        "--checkpoint-every", CHECKPOINT_EVERY, "--kill-at-step", KILL_AT_STEP,
        "--ray", ray_cluster, "--artifacts", artifacts, "--run-name", "killed-on-ray", "--json",
        env={**cli_environment, KILL_WITHOUT_FLUSH: "1"},
    )  # fmt: skip
    assert "worker 1 of 2 died (its Ray actor: ActorDiedError)" in killed.stderr
    assert run_json(killed)["resumed_from_step"] == NEWEST_CHECKPOINT


def test_an_unreachable_ray_cluster_is_one_line(artifacts, cli_environment):
    completed = trainflow(
        "run", "--dataset", DATASET, "--workers", 2, "--ray", f"127.0.0.1:{free_port()}",
        "--artifacts", artifacts, env=cli_environment, check_status=EXIT_USER_ERROR,
    )  # fmt: skip
    assert_one_line_error(completed, "does not answer")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "0"], "--workers"),
        (["--workers", "2", "--distribute", "mirrored"], "do not combine"),
        (["--devices", "2"], "--devices needs --distribute mirrored"),
        (["--ray", "127.0.0.1:6379"], "--ray needs --workers"),
    ],
)
def test_bad_distribution_options_are_one_line(options, message, cli_environment):
    completed = trainflow(
        "run", "--dataset", DATASET, *options, env=cli_environment, check_status=EXIT_USER_ERROR
    )
    assert_one_line_error(completed, message)


def test_a_model_the_workers_cannot_train_is_one_line(artifacts, cli_environment):
    completed = trainflow(
        "run", "--dataset", DATASET, "--workers", 2, "--model",
        "tests.distributed_builders:own_train_step", "--artifacts", artifacts,
        env=cli_environment, check_status=EXIT_USER_ERROR,
    )  # fmt: skip
    assert_one_line_error(completed, "overrides train_step")
    assert_no_worker_left()


def test_the_step_trains_as_fit_does_in_one_process():
    """Our step's loss scaling (per-example losses over the global batch) and logs are Keras's."""
    images = np.random.default_rng(0).random((96, 8, 8), dtype=np.float32)
    labels = np.arange(96) % 3
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)

    def model() -> keras.Model:
        keras.utils.set_random_seed(1)
        built = keras.Sequential(
            [keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")]
        )
        built.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return built

    by_fit, by_step = model(), model()
    fit_logs = by_fit.fit(batches, epochs=2, validation_data=batches, verbose=0).history
    step_logs: dict[str, list[float]] = {}

    class Recorder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for key, value in logs.items():
                step_logs.setdefault(key, []).append(value)

    placement = Placement(strategy=tf.distribute.get_strategy())
    ReplicatedFit(by_step, placement, ModelContract()).fit(
        batches.repeat(), 3, 2, 0, batches, [Recorder()]
    )
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(step_logs[key], fit_logs[key], rtol=1e-5)
    for ours, theirs in zip(by_step.get_weights(), by_fit.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
