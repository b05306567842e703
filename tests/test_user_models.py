"""Your model and your data: a builder by import path trains with every guarantee, on real digits
and on a folder of colour images; its saved files load in plain Keras and TensorFlow; a builder
trainflow cannot train is one line naming it, before any training."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from examples.datasets import write_digits_npz, write_rgb_image_folder
from tests.conftest import REPO_ROOT
from tests.test_cli import trainflow
from tests.test_cli_errors import EXIT_USER_ERROR, assert_one_line_error
from trainflow.recipe import ModelRecipe
from trainflow.training.builders import ModelBuilderError
from trainflow.training.models import build_model

EXAMPLE = "examples.small_convnet:build_model"
CHANCE_IN_TEN = 0.1

BAD_BUILDERS = """
import keras

def wrong_size(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes + 1, activation="softmax")])

def softmax_from_logits(input_shape, num_classes):
    model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                              keras.layers.Dense(num_classes, activation="softmax")])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model

def regression(input_shape, num_classes):
    model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                              keras.layers.Dense(num_classes)])
    model.compile(loss="mean_squared_error")
    return model

def with_lambda(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    doubled = keras.layers.Lambda(lambda images: images * 2, name="double")(inputs)
    flat = keras.layers.Flatten()(doubled)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(flat))

def raises(input_shape, num_classes):
    raise ValueError("this builder wants RGB images")

def not_a_model(input_shape, num_classes):
    return "a model"

def compiled_sgd(input_shape, num_classes):
    model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                              keras.layers.Dense(num_classes, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.5),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model

not_callable = 3
"""


@pytest.fixture
def builders(tmp_path, monkeypatch) -> Path:
    """A module `user_builders` of builders, importable from the test's working directory."""
    (tmp_path / "user_builders.py").write_text(BAD_BUILDERS)
    (tmp_path / "broken_builders.py").write_text("import a_package_that_is_not_installed\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "user_builders", raising=False)
    return tmp_path


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("user_builders:wrong_size", "outputs shape (1, 11) for one image; expected (1, 10)"),
        ("user_builders:softmax_from_logits", "but it ends in a softmax, whose outputs are"),
        ("user_builders:regression", "loss mean_squared_error: trainflow trains classifiers"),
        ("user_builders:with_lambda", "has Lambda layers (double): their Python code cannot be"),
        ("user_builders:raises", "raised ValueError for input_shape=(28, 28), num_classes=10: "),
        ("user_builders:not_a_model", "returned str, not a keras.Model"),
        ("user_builders:not_callable", "user_builders has no function not_callable"),
        ("user_builders:missing", "user_builders has no function missing"),
        ("no_such_module:build", "cannot import no_such_module (ModuleNotFoundError"),
        ("broken_builders:build", "cannot import broken_builders (ModuleNotFoundError: No module"),
    ],
)
def test_a_builder_trainflow_cannot_train_is_one_error_naming_it(builders, model, message):
    with pytest.raises(ModelBuilderError, match=f"model (builder )?{model}") as raised:
        build_model(model, (28, 28), 10)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_compiled_model_keeps_its_optimizer_and_an_uncompiled_one_gets_the_options(builders):
    compiled = build_model(ModelRecipe(model="user_builders:compiled_sgd"), (28, 28), 10)
    assert type(compiled.optimizer).__name__ == "SGD" and compiled.optimizer.momentum == 0.5
    recipe = ModelRecipe(model=EXAMPLE, optimizer="rmsprop", learning_rate=0.004)
    uncompiled = build_model(recipe, (12, 12, 3), 3)
    assert type(uncompiled.optimizer).__name__ == "RMSprop"
    assert float(uncompiled.optimizer.learning_rate.numpy()) == pytest.approx(0.004)


def test_built_in_models_take_channels():
    for model in ("mlp", "cnn"):
        assert build_model(model, (12, 12, 3), 37).output_shape == (None, 37)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("user_builders:wrong_size", "outputs shape (1, 11) for one image"),
        ("user_builders:softmax_from_logits", "from_logits=True), but it ends in a softmax"),
        ("user_builders:regression", "loss mean_squared_error: trainflow trains classifiers"),
        ("no_such_module:build", "cannot import no_such_module"),
    ],
)
def test_a_bad_builder_fails_the_command_in_one_line_before_training(
    builders, idx_dir, artifacts, server_environment, model, message
):
    environment = {**server_environment, "PYTHONPATH": str(builders)}
    completed = trainflow(
        "run",
        "--dataset",
        f"idx:{idx_dir}",
        "--model",
        model,
        "--artifacts",
        artifacts,
        "--run-name",
        "bad-builder",
        env=environment,
        check_status=EXIT_USER_ERROR,
    )
    assert_one_line_error(completed, message)
    run_dir = artifacts / "runs" / "bad-builder"
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "training.json").exists()


def train_example(dataset: str, artifacts: Path, environment: dict, *options: str) -> dict:
    """`trainflow run --model examples.small_convnet:build_model`, from the repository root as the
    README says, and its JSON summary."""
    completed = trainflow(
        "run",
        "--model",
        EXAMPLE,
        "--dataset",
        dataset,
        "--artifacts",
        artifacts,
        "--json",
        *options,
        env=environment,
    )
    return json.loads(completed.stdout)


def test_the_example_model_learns_real_digits(tmp_path, artifacts, server_environment):
    source = write_digits_npz(tmp_path / "digits.npz")
    summary = train_example(f"npz:{source}", artifacts, server_environment, "--epochs", "12")
    assert summary["test_accuracy"] > 5 * CHANCE_IN_TEN
    assert summary["model"] == EXAMPLE and len(summary["class_names"]) == 10


def test_the_example_model_learns_an_image_folder_and_its_files_load_elsewhere(
    tmp_path, artifacts, server_environment
):
    folder = write_rgb_image_folder(tmp_path / "colours")
    summary = train_example(
        f"images:{folder}",
        artifacts,
        server_environment,
        "--epochs",
        "10",
        "--learning-rate",
        "0.01",
    )
    assert summary["test_accuracy"] > 0.8  # chance: 1 in 3
    assert summary["class_names"] == ["blue", "green", "red"]
    evaluation = json.loads(Path(summary["evaluation_path"]).read_text())
    assert [item["name"] for item in evaluation["report"]["per_class"]] == summary["class_names"]
    # Plain Keras and TensorFlow, as a user's own script would load the files.
    probe = textwrap.dedent(
        f"""
        import json, sys
        import keras, numpy as np, tensorflow as tf
        from examples.small_convnet import build_model
        images = np.random.default_rng(0).random((5, 12, 12, 3), dtype=np.float32)
        loaded = keras.models.load_model({summary["model_path"]!r})  # safe mode, the default
        rebuilt = build_model((12, 12, 3), 3)
        rebuilt.load_weights({summary["weights_path"]!r})
        saved = tf.saved_model.load({summary["saved_model_path"]!r})  # keep it: serve needs it
        served = saved.serve(images).numpy()
        expected = loaded.predict(images, verbose=0)
        print(json.dumps([
            float(np.abs(rebuilt.predict(images, verbose=0) - expected).max()),
            float(np.abs(served - expected).max()),
            list(served.shape),
        ]))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rebuilt_difference, served_difference, served_shape = json.loads(
        completed.stdout.strip().splitlines()[-1]
    )
    assert rebuilt_difference < 1e-5 and served_difference < 1e-5
    assert served_shape == [5, 3]
    assert np.isclose(sum(item["support"] for item in evaluation["report"]["per_class"]), 24)
