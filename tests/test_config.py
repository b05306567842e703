from pathlib import Path

import pytest
from pydantic import ValidationError

from trainflow.config import RunConfig
from trainflow.datasets import DataSource


@pytest.mark.parametrize(
    ("spec", "kind", "location"),
    [
        ("mnist", "mnist", None),
        ("fashion_mnist", "fashion_mnist", None),
        ("idx:../shared/data/mnist-t10k", "idx", Path("../shared/data/mnist-t10k")),
        ("npz:/data/mnist.npz", "npz", Path("/data/mnist.npz")),
        ("parquet:artifacts/data/abc", "parquet", Path("artifacts/data/abc")),
        ("images:photos/pets", "images", Path("photos/pets")),
    ],
)
def test_parse_source(spec, kind, location):
    source = DataSource.parse(spec)
    assert (source.kind, source.location) == (kind, location)
    assert str(source) == spec


@pytest.mark.parametrize("spec", ["cifar10", "idx:", "npz", "mnist:somewhere", "csv:data.csv"])
def test_unknown_or_incomplete_source_is_rejected_naming_it(spec):
    with pytest.raises(ValidationError, match="is not one of mnist, fashion_mnist, idx:DIR"):
        RunConfig(dataset=spec)


@pytest.mark.parametrize("name", ["a/b", "..", "x..y", ".hidden", "with space", "é", "a" * 101])
def test_unsafe_run_names_are_rejected(name):
    with pytest.raises(ValidationError, match="run name"):
        RunConfig(run_name=name)


@pytest.mark.parametrize("name", ["nightly-2026-11-23", "run_1", "A.b"])
def test_safe_run_names_are_accepted(name):
    assert RunConfig(run_name=name).run_name == name


@pytest.mark.parametrize(
    "options",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"patience": -1},
        {"model": "resnet"},
        {"model": "examples/pets.py:build"},
        {"model": "examples.pets:"},
        {"optimizer": "lbfgs"},
        {"learning_rate": 0},
        {"num_classes": 1},
        {"image_size": "64"},
        {"image_size": "0,64"},
        {"fail_at_epoch": 0},
    ],
)
def test_out_of_range_options_are_rejected(options):
    with pytest.raises(ValidationError):
        RunConfig(**options)


def test_split_fractions_must_leave_training_data():
    with pytest.raises(ValidationError, match="must be below 1"):
        RunConfig(validation_fraction=0.5, test_fraction=0.5)


def test_the_preparation_carries_the_seed_fractions_size_and_classes():
    config = RunConfig(
        seed=7, validation_fraction=0.2, test_fraction=0.3, image_size=" 64, 48", num_classes=37
    )
    preparation = config.preparation
    assert (preparation.seed, preparation.validation_fraction, preparation.test_fraction) == (
        7,
        0.2,
        0.3,
    )
    assert (preparation.image_size, preparation.num_classes) == ((64, 48), 37)
    assert config.image_size == "64,48"


def test_unset_preparation_options_leave_the_identity_as_before():
    """Data prepared before image_size and num_classes existed keeps its fingerprint."""
    assert RunConfig().preparation.identity() == {
        "validation_fraction": 0.1,
        "test_fraction": 0.2,
        "seed": 42,
    }


@pytest.mark.parametrize("model", ["mlp", "cnn", "examples.pets:build_model", "my_models:net"])
def test_a_model_is_built_in_or_a_builder_by_import_path(model):
    recipe = RunConfig(model=model, optimizer="sgd", learning_rate=0.1).recipe
    assert (recipe.model, recipe.optimizer, recipe.learning_rate) == (model, "sgd", 0.1)
    assert recipe.is_built_in == (model in ("mlp", "cnn"))


def test_unknown_fields_are_rejected():
    with pytest.raises(ValidationError):
        RunConfig(epoch=3)
