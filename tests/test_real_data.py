"""The real MNIST test split (10,000 images) from ../shared, end to end."""

import json

import pytest

from flows.training import training_flow
from tests.conftest import SHARED_MNIST_TEST_SPLIT, needs_shared_mnist
from trainflow.config import RunConfig

pytestmark = [needs_shared_mnist, pytest.mark.real_data, pytest.mark.usefixtures("prefect_harness")]


def test_mlp_reaches_90_percent_in_5_epochs(artifacts):
    config = RunConfig(dataset=f"idx:{SHARED_MNIST_TEST_SPLIT}", epochs=5, artifacts=artifacts)
    summary = training_flow(config)
    assert summary.test_accuracy >= 0.90
    assert summary.epochs_completed <= 5
    manifest = next((artifacts / "data").glob("*/manifest.json"))
    splits = json.loads(manifest.read_text())["splits"]
    assert {name: split["rows"] for name, split in splits.items()} == {
        "train": 7000,
        "validation": 1000,
        "test": 2000,
    }
    assert [
        a + b + c for a, b, c in zip(*(split["class_counts"] for split in splits.values()))
    ] == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_failure_at_epoch_3_of_4_is_retried_and_resumed_from_3(artifacts):
    config = RunConfig(
        dataset=f"idx:{SHARED_MNIST_TEST_SPLIT}", epochs=4, fail_at_epoch=3, artifacts=artifacts
    )
    summary = training_flow(config)
    assert summary.resumed_from == 3 and summary.epochs_completed == 4
    assert summary.test_accuracy >= 0.90
