"""CLI options as views of a parameter model: type, default and help come from the model's field."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import click

from psra_bench.paramspec import ParamModel

__all__ = ["model_option"]

F = TypeVar("F", bound=Callable[..., Any])

_CLICK_TYPES: dict[type, click.ParamType] = {int: click.INT, float: click.FLOAT, str: click.STRING}


def _scalar(annotation: Any) -> Any:
    """``X | None`` -> X."""
    if isinstance(annotation, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def model_option(
    model: type[ParamModel],
    name: str,
    *flags: str,
    preset: ParamModel | None = None,
    note: str = "",
) -> Callable[[F], F]:
    """A click option for field ``name`` of ``model``: its type and help, and its default from ``preset``.

    Without ``preset`` the option has no default (None: the command's preset or params file applies),
    and ``note`` says what applies then. A bool field is a flag: ``--x/--no-x`` when the preset turns it on.
    ``flags`` default to ``--<name with dashes>``. The values are checked by the model, not by click.
    """
    field_type = _scalar(model.model_fields[name].annotation)
    text = model.help(name)
    first = text[:1].upper() if text[1:2].islower() else text[:1]  # "p95 SLO" stays as written
    help_text = first + text[1:] + (f" ({note})" if note else "") + "."
    option = flags[0] if flags else "--" + name.replace("_", "-")
    default = getattr(preset, name) if preset is not None else None
    if field_type is bool:
        if default:
            bare = option.removeprefix("--")
            return click.option(f"--{bare}/--no-{bare}", name, default=True, show_default=True, help=help_text)
        return click.option(option, name, is_flag=True, help=help_text)
    return click.option(
        option,
        name,
        type=_CLICK_TYPES.get(field_type, click.STRING),
        default=default,
        show_default=preset is not None,
        help=help_text,
    )
