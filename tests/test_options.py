"""The command line's training options are derived from `RunConfig`: one option per field, and a
config turned back into options (the crash demo's child command) gives the same config."""

from pathlib import Path

import pytest

from app.cli import build_parser
from app.commands.demo_crash import DEMO_CHECKPOINT_EVERY, DEMO_OWN_FIELDS
from app.options import arguments_of, config_from_arguments, option_name
from trainflow.config import RunConfig


def parsed_config(*arguments: str) -> RunConfig:
    return config_from_arguments(build_parser().parse_args(["run", *arguments]))


def test_every_config_field_is_a_run_option_with_its_description(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    help_text = capsys.readouterr().out
    for field, info in RunConfig.model_fields.items():
        assert option_name(field) in help_text, field
        assert info.description, f"RunConfig.{field} needs a description: it is the option's help"


@pytest.mark.parametrize(
    "config",
    [
        RunConfig(),
        RunConfig(
            dataset="idx:/data/mnist",
            model="cnn",
            epochs=7,
            batch_size=64,
            patience=2,
            seed=9,
            validation_fraction=0.25,
            test_fraction=0.3,
            run_name="night-1",
            artifacts=Path("/tmp/elsewhere"),
            fresh=True,
            checkpoint_every=50,
            keep_checkpoints=5,
            deterministic=True,
            fail_at_epoch=2,
            kill_at_step=120,
        ),
    ],
)
def test_a_config_turned_into_options_parses_back_to_the_same_config(config):
    assert parsed_config(*arguments_of(config)) == config


def test_unset_options_keep_the_config_defaults():
    assert parsed_config() == RunConfig()


def test_the_crash_demo_takes_the_training_options_with_its_own_checkpoint_default():
    args = build_parser().parse_args(["demo-crash", "--epochs", "2", "--model", "cnn"])
    config = config_from_arguments(args)
    assert (config.epochs, config.model) == (2, "cnn")
    assert config.checkpoint_every == DEMO_CHECKPOINT_EVERY != RunConfig().checkpoint_every
    for field in DEMO_OWN_FIELDS - {"kill_at_step"}:
        assert not hasattr(args, field)


def test_an_invalid_option_is_one_line_naming_it(capsys):
    assert config_from_arguments(build_parser().parse_args(["run", "--epochs", "0"])) is None
    assert capsys.readouterr().err.strip().startswith("trainflow: error: --epochs:")
