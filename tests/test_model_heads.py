"""Models as people write them: the heads and losses of the Keras and TensorFlow tutorials (logits,
one-hot losses, one sigmoid or one logit for two classes, `Rescaling` inside, a `keras.applications`
backbone, a subclassed model) train through the CLI on real data, and what trainflow evaluated is
what plain Keras and the SavedModel give when fed the recorded pixel range; a head and loss that
disagree are one line naming the builder, before any training."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

import examples.tutorial_models  # noqa: F401  registers DigitClassifier, as a user's script would
from examples.datasets import write_digits_npz, write_rgb_image_folder
from tasks.prepare_data import prepare_data
from tasks.train_model import train_model
from tests.conftest import SHARED_MNIST_TEST_SPLIT, needs_shared_mnist
from tests.test_cli import trainflow
from trainflow.config import RunConfig
from trainflow.contract import ModelContract, class_probabilities, labels_for_loss
from trainflow.data.prepared import read_split
from trainflow.errors import RunStateError
from trainflow.paths import ArtifactPaths
from trainflow.training.builders import ModelBuilderError
from trainflow.training.export import serving_probabilities
from trainflow.training.heads import expected_pixels
from trainflow.training.models import build_classifier

TUTORIALS = "examples.tutorial_models"

MISMATCHED_BUILDERS = """
import keras

def _dense(input_shape, units, **options):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(units, **options)])

def _compiled(model, loss):
    model.compile(optimizer="adam", loss=loss)
    return model

def softmax_from_logits(input_shape, num_classes):
    return _compiled(_dense(input_shape, num_classes, activation="softmax"),
                     keras.losses.SparseCategoricalCrossentropy(from_logits=True))

def logits_as_probabilities(input_shape, num_classes):
    return _compiled(_dense(input_shape, num_classes), "sparse_categorical_crossentropy")

def binary_loss_many_outputs(input_shape, num_classes):
    return _compiled(_dense(input_shape, num_classes, activation="softmax"), "binary_crossentropy")

def one_output_categorical(input_shape, num_classes):
    return _compiled(_dense(input_shape, 1, activation="sigmoid"), "categorical_crossentropy")

def sigmoid_over_classes(input_shape, num_classes):
    return _dense(input_shape, num_classes, activation="sigmoid")

def softmax_over_one(input_shape, num_classes):
    return _dense(input_shape, 1, activation="softmax")

def mean_squared_error(input_shape, num_classes):
    return _compiled(_dense(input_shape, num_classes, activation="softmax"), "mse")

def custom_loss(input_shape, num_classes):
    return _compiled(_dense(input_shape, num_classes, activation="softmax"),
                     lambda labels, outputs: keras.ops.mean(outputs))

def fixed_input_shape(input_shape, num_classes):
    return keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes, activation="softmax")])

def two_outputs(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    flat = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, [keras.layers.Dense(num_classes, activation="softmax")(flat),
                                keras.layers.Dense(1)(flat)])
"""

MISMATCHES = [
    ("softmax_from_logits", 10, "but it ends in a softmax, whose outputs are probabilities, not"),
    ("logits_as_probabilities", 10, "which takes probabilities, but its outputs are not prob"),
    ("binary_loss_many_outputs", 10, "a binary loss, but the data has 10 classes"),
    ("binary_loss_many_outputs", 2, "a binary loss, but it has 2 outputs"),
    ("one_output_categorical", 2, "which takes one output per class, but it has one output"),
    ("sigmoid_over_classes", 10, "ends in a sigmoid over 10 outputs"),
    ("softmax_over_one", 2, "ends in a softmax over one output, which is always 1"),
    ("mean_squared_error", 10, "compiled with loss mean_squared_error: trainflow trains classif"),
    ("custom_loss", 10, "compiled with loss <lambda>: trainflow trains classifiers"),
    ("two_outputs", 10, "has several outputs"),
    ("fixed_input_shape", 10, "cannot take images of shape (8, 8) (ValueError: "),
]


@pytest.fixture
def mismatched(tmp_path, monkeypatch) -> Path:
    (tmp_path / "mismatched_builders.py").write_text(MISMATCHED_BUILDERS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "mismatched_builders", raising=False)
    return tmp_path


@pytest.mark.parametrize(("builder", "num_classes", "message"), MISMATCHES)
def test_a_head_and_loss_that_disagree_are_one_line_naming_the_builder(
    mismatched, builder, num_classes, message
):
    model = f"mismatched_builders:{builder}"
    with pytest.raises(ModelBuilderError, match=f"model {model}") as raised:
        build_classifier(model, (8, 8), num_classes)
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("builder", "shape", "num_classes", "expected"),
    [
        ("mlp", (8, 8), 10, ("probabilities", "sparse", "unit")),
        ("quickstart", (8, 8), 10, ("logits", "sparse", "unit")),
        ("image_classification", (12, 12, 3), 3, ("logits", "sparse", "raw")),
        ("simple_convnet", (12, 12, 3), 3, ("probabilities", "one_hot", "unit")),
        ("from_scratch", (12, 12, 3), 2, ("logits", "binary", "raw")),
        ("binary_sigmoid", (8, 8), 2, ("probabilities", "binary", "unit")),
        ("mobilenet", (32, 32, 3), 3, ("logits", "sparse", "raw")),
        ("frozen_mobilenet", (32, 32, 3), 3, ("logits", "sparse", "raw")),
        ("subclassed", (8, 8), 10, ("probabilities", "sparse", "unit")),
    ],
)
def test_the_contract_is_read_from_the_model_as_written(builder, shape, num_classes, expected):
    name = builder if builder == "mlp" else f"{TUTORIALS}:{builder}"
    model, contract = build_classifier(name, shape, num_classes)
    assert (contract.outputs, contract.labels, contract.pixels) == expected
    assert model.compiled
    if builder == "binary_sigmoid":  # uncompiled: compiled here with the loss of its head
        assert type(model.loss).__name__ == "BinaryCrossentropy" and not model.loss.from_logits
    assert build_classifier(name, shape, num_classes, "unit")[1].pixels == "unit"


def test_probabilities_labels_and_serving_agree_for_every_head():
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 1, 0])
    cases = {
        ModelContract(outputs="logits"): rng.normal(size=(4, 2)) * 30,
        ModelContract(): np.array([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0], [0.9, 0.1]]),
        ModelContract(outputs="logits", labels="binary"): rng.normal(size=(4, 1)) * 50,
        ModelContract(labels="binary"): np.array([[0.2], [0.9], [0.5], [0.0]]),
    }
    for contract, outputs in cases.items():
        probabilities = class_probabilities(outputs, contract)
        assert probabilities.shape == (4, 2) and np.isfinite(probabilities).all()
        np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-6)
        served = keras.ops.convert_to_numpy(
            serving_probabilities(tf.constant(outputs, tf.float32), contract)
        )
        np.testing.assert_allclose(served, probabilities, atol=1e-6)
    np.testing.assert_array_equal(
        class_probabilities(
            np.array([[-2.0], [3.0]]), ModelContract(outputs="logits", labels="binary")
        ).argmax(1),
        [0, 1],
    )
    assert labels_for_loss(labels, ModelContract(), 2).tolist() == [0, 1, 1, 0]
    assert labels_for_loss(labels, ModelContract(labels="one_hot"), 3).tolist()[1] == [0, 1, 0]
    binary = labels_for_loss(labels, ModelContract(labels="binary"), 2)
    assert binary.shape == (4, 1) and binary.dtype == np.float32


def two_colour_folder(root: Path, size: tuple[int, int] = (12, 12)) -> Path:
    """The colour folder without its blue class: green and red, two classes."""
    folder = write_rgb_image_folder(root, size=size)
    shutil.rmtree(folder / "blue")
    return folder


def datasets(tmp_path: Path) -> dict[str, str]:
    return {
        "digits": f"npz:{write_digits_npz(tmp_path / 'digits.npz')}",
        "colours": f"images:{write_rgb_image_folder(tmp_path / 'colours')}",
        "two colours": f"images:{two_colour_folder(tmp_path / 'two')}",
        "colours 32": f"images:{write_rgb_image_folder(tmp_path / 'c32', size=(32, 32))}",
        "mnist": f"idx:{SHARED_MNIST_TEST_SPLIT}",
    }


# builder, dataset, options, pixel range, test accuracy it must beat (chance: 1/K). The backbones
# have random weights (nothing can be downloaded here): frozen, their features are ~1e-8 and
# nothing learns; trained, the training data is learnt but BatchNormalization's moving statistics
# (momentum 0.999) lag far behind in so few steps, so test accuracy stays near chance as it does
# in plain Keras. They prove the mechanics; the unfrozen one must learn its training data.
TRAINED = [
    pytest.param("quickstart", "mnist", ["--epochs", "3"], "unit", 0.85, marks=needs_shared_mnist),
    ("image_classification", "colours", ["--epochs", "8"], "raw", 0.8),
    # written for MNIST's (28, 28, 1): built again with the channel axis
    pytest.param(
        "simple_convnet", "mnist", ["--epochs", "2"], "unit", 0.85, marks=needs_shared_mnist
    ),
    ("from_scratch", "two colours", ["--epochs", "8", "--batch-size", "16"], "raw", 0.8),
    ("binary_sigmoid", "two colours", ["--epochs", "8", "--batch-size", "16"], "unit", 0.8),
    ("frozen_mobilenet", "colours 32", ["--epochs", "2", "--batch-size", "16"], "raw", None),
    pytest.param(
        "mobilenet",
        "colours 32",
        ["--epochs", "6", "--batch-size", "16"],
        "raw",
        None,
        marks=pytest.mark.slow,
    ),
    ("subclassed", "digits", ["--epochs", "10"], "unit", 0.8),
]


@pytest.mark.parametrize(("builder", "dataset", "options", "pixels", "beats"), TRAINED)
def test_a_tutorial_model_trains_evaluates_and_serves_what_was_evaluated(
    tmp_path, artifacts, server_environment, builder, dataset, options, pixels, beats
):
    model = f"{TUTORIALS}:{builder}"
    source = datasets(tmp_path)[dataset]
    completed = trainflow(
        "run",
        "--model",
        model,
        "--dataset",
        source,
        "--artifacts",
        artifacts,
        "--json",
        *options,
        env=server_environment,
    )
    summary = json.loads(completed.stdout)
    training = json.loads((Path(summary["run_dir"]) / "training.json").read_text())
    if beats is not None:
        assert summary["test_accuracy"] > beats, summary
    elif builder == "mobilenet":
        assert training["history"]["accuracy"][-1] > 0.8, training["history"]
    assert summary["pixels"] == pixels
    metadata = json.loads((Path(summary["model_path"]).parent / "model.json").read_text())
    assert metadata["contract"]["pixels"] == pixels and metadata["model"] == model
    evaluation = json.loads(Path(summary["evaluation_path"]).read_text())
    assert len(evaluation["report"]["per_class"]) == len(summary["class_names"])

    # Plain Keras and TensorFlow, fed the test split in the recorded range.
    test_split = ArtifactPaths.at(artifacts).data(summary["data_fingerprint"]).split("test")
    images, labels = read_split(test_split, "raw")
    images = images if pixels == "raw" else images / np.float32(255)
    outputs = keras.models.load_model(summary["model_path"]).predict(images, verbose=0)
    if outputs.shape[1] == 1:  # one output: class 1 above a logit of 0, a probability of 0.5
        threshold = 0.0 if metadata["contract"]["outputs"] == "logits" else 0.5
        predicted = (outputs[:, 0] > threshold).astype(int)
    else:
        predicted = outputs.argmax(axis=1)
    assert abs((predicted == labels).mean() - summary["test_accuracy"]) <= 0.005
    saved = tf.saved_model.load(summary["saved_model_path"])  # kept: `serve` needs it alive
    served = saved.serve(images).numpy()
    table = pq.read_table(Path(summary["reports_dir"]) / "predictions.parquet")
    assert served.shape == (len(labels), len(summary["class_names"]))
    np.testing.assert_array_equal(served.argmax(axis=1), table.column("predicted").to_numpy())
    np.testing.assert_allclose(served.max(axis=1), table.column("confidence").to_numpy(), atol=1e-5)


def test_a_run_resumes_only_with_the_pixel_range_it_was_trained_with(tmp_path, artifacts):
    config = RunConfig(
        dataset=datasets(tmp_path)["colours"],
        model=f"{TUTORIALS}:image_classification",
        pixels="unit",
        epochs=1,
        artifacts=artifacts,
        run_name="pixels",
    )
    root = ArtifactPaths.at(artifacts)
    data = prepare_data(config.source, config.preparation, root)
    assert train_model(config, data, root.run("pixels")).contract.pixels == "unit"
    more = config.model_copy(update={"pixels": None, "epochs": 2})  # the model's own choice: raw
    with pytest.raises(RunStateError, match="resume it with --pixels unit"):
        train_model(more, data, root.run("pixels"))
    resumed = train_model(more.model_copy(update={"pixels": "unit"}), data, root.run("pixels"))
    assert resumed.resumed_from == 1 and resumed.epochs_completed == 2


def test_a_raw_pixel_model_is_evaluated_again_and_judged_as_champion_in_its_own_range(
    tmp_path, artifacts, server_environment
):
    """`trainflow evaluate` and the registry's re-evaluation of a champion on a challenger's data
    feed the model the pixel range it was trained on: fed [0, 1], this model, which rescales its
    input itself, would see black images and score a third."""
    decisions = {}
    for name, per_class in (("champion", 40), ("challenger", 30)):
        folder = write_rgb_image_folder(tmp_path / name, per_class=per_class)
        completed = trainflow(
            "retrain",
            "--model",
            f"{TUTORIALS}:image_classification",
            "--dataset",
            f"images:{folder}",
            "--epochs",
            "8",
            "--run-name",
            name,
            "--artifacts",
            artifacts,
            "--tolerance",
            "0",
            "--json",
            env=server_environment,
        )
        decisions[name] = json.loads(completed.stdout)
    judged = decisions["challenger"]
    assert judged["champion_run"] == "champion" and judged["champion_accuracy"] > 0.8, judged
    evaluation = artifacts / "runs" / "champion" / "evaluation.json"
    before = json.loads(evaluation.read_text())
    trainflow("evaluate", artifacts / "runs" / "champion", env=server_environment)
    after = json.loads(evaluation.read_text())
    assert after["accuracy"] == before["accuracy"] > 0.8


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (
            [keras.layers.RandomFlip(), keras.layers.Rescaling(1 / 255), keras.layers.Dense(2)],
            "raw",
        ),
        ([keras.layers.Normalization(mean=123.7, variance=3409.0), keras.layers.Dense(2)], "raw"),
        ([keras.layers.Normalization(mean=0.45, variance=0.05), keras.layers.Dense(2)], "unit"),
        ([keras.layers.Dense(2), keras.layers.Rescaling(1 / 255)], "unit"),
        ([keras.layers.Flatten(), keras.layers.Dense(2)], "unit"),
    ],
)
def test_the_pixel_range_is_raw_only_when_the_model_rescales_its_input_first(layers, expected):
    model = keras.Sequential([keras.Input((4, 4, 3)), *layers])
    assert expected_pixels(model) == expected
    nested = keras.Sequential([keras.Input((4, 4, 3)), model])  # a sub-model, opened in place
    assert expected_pixels(nested) == expected
