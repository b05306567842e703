"""The `trainflow` options derived from a pydantic model: each field is one option, declared once
in the model, with its description and default as the option's help. `RunConfig` gives the options
of a training run, `StackOptions` (app/stack/options.py) those of `trainflow stack`.

`arguments_of` turns a config back into the options that reproduce it, for the crash demo's child
`trainflow run` processes.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from trainflow.config import RunConfig

Model = TypeVar("Model", bound=BaseModel)

# Metavars of the options whose type does not say what they take.
METAVARS = {
    "dataset": "SOURCE",
    "model": "MODEL",
    "image_size": "H,W",
    "run_name": "NAME",
    "artifacts": "DIR|URL",
    "memory_budget": "SIZE",
    "port": "PORT",
    "host": "ADDRESS",
    "ui_host": "ADDRESS",
    "database_url": "URL",
}


def option_name(field: str) -> str:
    """`batch_size` -> `--batch-size`."""
    return "--" + field.replace("_", "-")


def add_model_options(
    parser: argparse.ArgumentParser, model: type[BaseModel], fields: Iterable[str], **defaults: Any
) -> None:
    """Add an option for each of the `fields` of `model`; `defaults` replace the model's own
    default of some of them (for this command only). The help shows a field's `default_help`
    (json_schema_extra) as its default, when it has one, and no default when that is empty."""
    for field in fields:
        info = model.model_fields[field]
        value_type, choices = _value_type(info)
        default = defaults.get(field)
        if value_type is bool:
            parser.add_argument(
                option_name(field), action="store_true", default=None, help=info.description
            )
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        shown_default = (
            defaults[field] if field in defaults else extra.get("default_help", info.default)
        )
        if shown_default is None:
            shown_default = "off"
        help_text = (
            info.description
            if shown_default == ""
            else f"{info.description} (default: {shown_default})"
        )
        parser.add_argument(
            option_name(field),
            type=value_type,
            choices=choices,
            default=default,
            metavar=None if choices else METAVARS.get(field, _metavar(value_type)),
            help=help_text,
        )


def add_artifacts_option(parser: argparse.ArgumentParser) -> None:
    """`--artifacts`, with its default value when not given, for the commands that read the
    artifacts without a run config (runs, models, promote, rollback)."""
    add_model_options(
        parser, RunConfig, ["artifacts"], artifacts=RunConfig.model_fields["artifacts"].default
    )


def config_from_arguments(args: argparse.Namespace) -> RunConfig | None:
    """The run config the parsed options give (see `model_from_arguments`)."""
    return model_from_arguments(args, RunConfig)


def model_from_arguments(args: argparse.Namespace, model: type[Model]) -> Model | None:
    """The `model` the parsed options give (unset options keep the model's defaults); None after
    printing one line per invalid option."""
    options = {
        name: getattr(args, name)
        for name in model.model_fields
        if getattr(args, name, None) is not None
    }
    try:
        return model(**options)
    except ValidationError as error:
        for problem in error.errors():
            field = "_".join(str(part) for part in problem["loc"])
            option = option_name(field) if field else "options"
            message = problem["msg"].removeprefix("Value error, ")
            print(f"trainflow: error: {option}: {message}", file=sys.stderr)
        return None


def arguments_of(config: RunConfig) -> list[str]:
    """The `trainflow run` options that give `config`: every field that differs from its default."""
    arguments = []
    for field, info in RunConfig.model_fields.items():
        value = getattr(config, field)
        if value == info.default:
            continue
        if isinstance(value, bool):
            arguments.append(option_name(field))  # flags default to off
        else:
            arguments += [option_name(field), str(value)]
    return arguments


def _value_type(info: FieldInfo) -> tuple[type, list[str] | None]:
    """The Python type an option parses into, and its choices for a Literal."""
    annotation = info.annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return str, list(typing.get_args(annotation))
    return annotation, None


def _metavar(value_type: type) -> str:
    return {int: "N", float: "X", Path: "PATH"}.get(value_type, "VALUE")
