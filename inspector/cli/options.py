"""What every command's parser shares: the help formatter, flag types and config-derived flags.

The command modules (:mod:`.daemon`, :mod:`.model`, :mod:`.dataset`, :mod:`.tools`,
:mod:`.schema`) build their subparsers from these, so a flag reads and checks the same in
every command.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, Literal, TypeAlias, get_args, get_origin

from pydantic import BaseModel

#: What ``inspector --help`` says about the program (the package docstring is for developers).
DESCRIPTION = (
    "Streaming industrial inspection: a Reverse Distillation anomaly model scores frames from "
    "cameras or a Kafka topic; results go to Kafka as JSON, metrics to Prometheus."
)
EPILOG = "Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration."

#: A command's body: the parsed flags in, the process exit code out.
Handler = Callable[[argparse.Namespace], int]
#: ``build_parser``'s subcommands, to which each command module adds its own.
Subparsers: TypeAlias = "argparse._SubParsersAction[SubParser]"

#: What --backend says (the choices come from ModelConfig.backend).
BACKEND_HELP = "torch: --checkpoint is a checkpoint; else an `inspector export` folder"
#: What --auto-cache-dir says (predict, calibrate: the daemon's choice of precision auto).
AUTO_CACHE_HELP = (
    "the daemon's model.auto_cache_dir, to use its precision auto choice for this checkpoint "
    "and --batch-size (default: the daemon's default, $XDG_CACHE_HOME/inspector)"
)


def flags(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The flags among ``names`` that have a value, as keyword arguments.

    For a config or options class whose fields the flags are named after; a flag not given
    leaves the class's default.
    """
    given = vars(args)
    return {name: given[name] for name in names if given.get(name) is not None}


def from_field(model: type[BaseModel], name: str, *, with_default: bool = True) -> dict[str, Any]:
    """``add_argument`` keywords for a flag that sets ``model.name``: its choices and default.

    The flags are derived from the configuration models, so a choice or a default is written
    once, where the setting is defined. ``with_default=False``: the model's default applies
    (the flag is left out of the keyword arguments built with :func:`flags`).
    """
    field = model.model_fields[name]
    annotation = field.annotation
    kwargs: dict[str, Any] = {}
    if get_origin(annotation) is Literal:
        kwargs["choices"] = list(get_args(annotation))
    elif isinstance(annotation, type) and issubclass(annotation, Enum):
        kwargs["choices"] = [member.value for member in annotation]
    default = field.default.value if isinstance(field.default, Enum) else field.default
    if with_default:
        kwargs["default"] = default
    else:  # the flag's own default is None; say what the model then uses
        kwargs["help"] = f"(default: {default})"
    return kwargs


def positive(value: str) -> int:
    """An integer flag of at least 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _worth_showing(default: object) -> bool:
    return not (default is None or default is False or default == argparse.SUPPRESS)


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default (when it has one worth showing), help text or not."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and _worth_showing(action.default):
            action.help = "(default: %(default)s)"  # argparse shows defaults in help texts only
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not _worth_showing(action.default) or "default" in text:
            return text
        return super()._get_help_string(action) or text


class SubParser(argparse.ArgumentParser):
    """Every subcommand shows its defaults and the exit codes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        kwargs.setdefault("epilog", EPILOG)
        super().__init__(*args, **kwargs)
