"""The `trainflow` options of a training run, derived from `RunConfig`: each config field is one
option, declared once in the config, with its description and default as the option's help.

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
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from trainflow.config import RunConfig

# Metavars of the options whose type does not say what they take.
METAVARS = {
    "dataset": "SOURCE",
    "model": "MODEL",
    "image_size": "H,W",
    "run_name": "NAME",
    "artifacts": "DIR|URL",
    "memory_budget": "SIZE",
}


def option_name(field: str) -> str:
    """`batch_size` -> `--batch-size`."""
    return "--" + field.replace("_", "-")


def add_config_options(
    parser: argparse.ArgumentParser, fields: Iterable[str], **defaults: Any
) -> None:
    """Add an option for each of the `RunConfig` `fields`; `defaults` replace the config's own
    default of some of them (for this command only)."""
    for field in fields:
        info = RunConfig.model_fields[field]
        value_type, choices = _value_type(info)
        default = defaults.get(field)
        if value_type is bool:
            parser.add_argument(
                option_name(field), action="store_true", default=None, help=info.description
            )
            continue
        shown_default = default if field in defaults else info.default
        if shown_default is None:
            shown_default = (info.json_schema_extra or {}).get("default_help", "off")
        parser.add_argument(
            option_name(field),
            type=value_type,
            choices=choices,
            default=default,
            metavar=None if choices else METAVARS.get(field, _metavar(value_type)),
            help=f"{info.description} (default: {shown_default})",
        )


def config_from_arguments(args: argparse.Namespace) -> RunConfig | None:
    """The config the parsed options give (unset options keep the config's defaults); None after
    printing one line per invalid option."""
    options = {
        name: getattr(args, name)
        for name in RunConfig.model_fields
        if getattr(args, name, None) is not None
    }
    try:
        return RunConfig(**options)
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
