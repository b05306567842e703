"""The report files, and the saved model used by the plain TensorFlow code people already have."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from app.reevaluate import reevaluate_run
from tasks.evaluate_model import evaluate_model
from tasks.persist_model import persist_model
from tasks.persist_weights import persist_weights
from tasks.report_run import report_run
from tasks.train_model import train_model
from trainflow.data.prepared import read_split
from trainflow.errors import UserInputError
from trainflow.reports.metrics import classification_report
from trainflow.runs.records import open_run
from trainflow.training.callbacks.faults import InjectedFailure

CLASSIC_CODE = """
import json, sys
import numpy as np
import tensorflow as tf

keras_file, weights_file, saved_model_dir, test_file = sys.argv[1:5]
test = np.load(test_file)
x_test, y_test = test["x_test"], test["y_test"]

model = tf.keras.models.load_model(keras_file)
model.summary()
loaded_loss, loaded_accuracy = model.evaluate(x_test, y_test, verbose=0)

by_hand = tf.keras.models.Sequential([
    tf.keras.layers.Flatten(input_shape=(28, 28)),
    tf.keras.layers.Dense(128, activation="relu"),
    tf.keras.layers.Dense(10, activation="softmax"),
])
by_hand.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
by_hand.load_weights(weights_file)
hand_loss, hand_accuracy = by_hand.evaluate(x_test, y_test, verbose=0)

served = tf.saved_model.load(saved_model_dir)
served_probabilities = served.serve(tf.constant(x_test)).numpy()
keras_probabilities = model.predict(x_test, verbose=0)
print(json.dumps({
    "loaded_accuracy": loaded_accuracy,
    "hand_accuracy": hand_accuracy,
    "served_matches": bool(np.allclose(served_probabilities, keras_probabilities, atol=1e-5)),
    "served_classes_match": bool((served_probabilities.argmax(1) == keras_probabilities.argmax(1)).all()),
}))
"""


@pytest.fixture
def finished_run(run):
    """A run trained (interrupted once after epoch 2), persisted, evaluated and reported."""
    config, data, paths = run
    open_run(config, paths.name, flow_run_id=None)
    with pytest.raises(InjectedFailure):
        train_model(config.model_copy(update={"fail_at_epoch": 2}), data, paths)
    training = train_model(config, data, paths)
    weights = persist_weights(training, paths)
    persisted = persist_model(training, weights, paths)
    evaluation = evaluate_model(persisted, training, data, paths)
    report = report_run(training, evaluation, data, paths)
    return data, paths, training, persisted, evaluation, report


def test_classification_report_by_hand():
    labels = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 1])
    report = classification_report(labels, predicted, ["cat", "dog", "fox"])
    assert report.confusion_matrix == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert [round(item.precision, 4) for item in report.per_class] == [1.0, 0.5, 0.0]
    assert [item.recall for item in report.per_class] == [0.5, 1.0, 0.0]
    assert [round(item.f1, 4) for item in report.per_class] == [0.6667, 0.6667, 0.0]
    assert [item.support for item in report.per_class] == [2, 2, 1]
    assert [item.name for item in report.per_class] == ["cat", "dog", "fox"]
    assert round(report.macro_f1, 4) == 0.4444


def test_evaluation_and_report_files(finished_run):
    data, paths, training, _, evaluation, report = finished_run
    saved = json.loads(paths.evaluation.read_text())
    assert saved["report"]["confusion_matrix"] == evaluation.report.confusion_matrix
    assert sum(map(sum, saved["report"]["confusion_matrix"])) == saved["num_examples"] == 80
    assert {"macro_precision", "macro_recall", "macro_f1", "per_class"} <= set(saved["report"])
    per_class = pq.read_table(paths.per_class_table).to_pylist()
    assert [row["support"] for row in per_class] == [8] * 10
    confusion = pq.read_table(paths.confusion_table).to_pydict()
    assert sum(confusion["count"]) == 80 and len(confusion["count"]) == 100
    predictions = pq.read_table(paths.predictions_table).to_pydict()
    assert predictions["label"] == read_split(data.paths.split("test"))[1].tolist()
    accuracy = np.mean(np.array(predictions["label"]) == np.array(predictions["predicted"]))
    assert accuracy == evaluation.accuracy
    history = pq.read_table(paths.history_table).to_pydict()
    assert history["epoch"] == [1, 2, 3, 4]
    assert history["resumed"] == [False, False, True, False]
    assert history["val_loss"] == training.history["val_loss"]
    for picture in (report.learning_curves, report.confusion_matrix, report.confident_mistakes):
        with Image.open(picture) as image:
            assert image.format == "PNG" and image.width >= 600
    assert any(paths.tensorboard_dir.rglob("events.out.tfevents.*"))


def test_the_classic_code_loads_the_saved_files_and_gets_the_reported_accuracy(
    finished_run, tmp_path
):
    data, _, _, persisted, evaluation, _ = finished_run
    test_file = tmp_path / "test.npz"
    x_test, y_test = read_split(data.paths.split("test"))
    np.savez(test_file, x_test=x_test, y_test=y_test)
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            CLASSIC_CODE,
            str(persisted.keras_model),
            str(persisted.weights),
            str(persisted.saved_model),
            str(test_file),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Total params" in completed.stdout
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["loaded_accuracy"] == pytest.approx(evaluation.accuracy, abs=1e-6)
    assert result["hand_accuracy"] == pytest.approx(evaluation.accuracy, abs=1e-6)
    assert result["served_matches"] and result["served_classes_match"]


def test_reevaluate_on_another_dataset_rewrites_evaluation_and_report(finished_run, npz_file):
    _, paths, _, _, _, _ = finished_run
    evaluation = reevaluate_run(paths.run_dir, f"npz:{npz_file}")
    saved = json.loads(paths.evaluation.read_text())
    assert evaluation.num_examples == saved["num_examples"] == 100
    assert pq.read_table(paths.predictions_table).num_rows == 100
    confusion = pq.read_table(paths.confusion_table).to_pydict()
    assert sum(confusion["count"]) == 100


def test_reevaluate_refuses_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(UserInputError, match="is not a finished trainflow run"):
        reevaluate_run(tmp_path, None)
