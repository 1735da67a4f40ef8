"""How a set of parameters is defined once: a strict pydantic model with named presets.

Each experiment's parameters are one :class:`ParamModel` subclass (``psra_bench.latency.params``,
``psra_bench.cachesim.params``, ``psra_bench.load.params``, ``psra_bench.params``,
``psra_bench.report.runner``): a field holds the type, bounds, default, help text and the
sentence a refusal ends with (``allowed``). Everything else is a view of that model: the
notebook's papermill ``parameters`` cell (:meth:`NotebookParams.cell`), the CLI options
(``psra_bench.cli.options``), the report's params file and the ``run_*`` functions.

Presets (the notebook's small defaults, the quick and the full report, a command's defaults)
are named instances: ``PRESETS`` maps a name to the values that differ from the field defaults,
merged along the class hierarchy, and ``Model.NOTEBOOK`` / ``Model.QUICK`` / ``Model.FULL`` are
the validated instances. Every refusal goes through one adapter (:func:`parameter_error`), which
turns a pydantic ``ValidationError`` into :class:`psra_bench.exceptions.ParameterError` — "name=value
is not valid: allowed." A bool is never accepted as a number (the models are strict).
"""

from __future__ import annotations

import os
import tempfile
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonDict
from pydantic_core import PydanticCustomError

from psra_bench.constants import MAX_VERDICTS
from psra_bench.exceptions import ParameterError
from psra_bench.settings import redact

__all__ = [
    "DEFAULT_DATABASE",
    "DATABASE_PATTERN",
    "ParamModel",
    "NotebookParams",
    "param",
    "field_of",
    "output_dir_param",
    "verdicts_param",
    "seed_param",
    "parameter_error",
    "refusal",
    "check_writable_dir",
]

#: The database the report and the notebooks use (created on the configured or embedded server).
DEFAULT_DATABASE = "psra_bench_report"
#: A database NAME (never a DSN): what the ``database`` parameters accept.
DATABASE_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"

#: The preset every model has besides its field defaults' own ``NOTEBOOK``.
_PRESET_NAMES = ("notebook", "quick", "full")


def param(default: Any, help: str, *, allowed: str, notebook: bool = True, **constraints: Any) -> Any:  # noqa: A002
    """A model field: its default, help text, the refusal's ``allowed`` sentence and its bounds (pydantic's ``Field``).

    ``notebook=False`` keeps the field out of the notebook's parameters cell (it keeps its default there).
    A list default is copied for each instance.
    """
    if "=" in help:  # papermill's parser drops a parameter whose comment holds "="
        raise ValueError(f"help text of a parameter may not contain '=': {help!r}")
    extra: JsonDict = {"allowed": allowed, "notebook": notebook}
    if isinstance(default, list):
        items = list(default)
        return Field(default_factory=lambda: list(items), description=help, json_schema_extra=extra, **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


def field_of(model: type[BaseModel], name: str, default: Any, help: str | None = None) -> Any:  # noqa: A002
    """Field ``name`` of ``model`` (its bounds, help and refusal) with another default: one field, two models."""
    source = model.model_fields[name]
    changes: dict[str, Any] = {"default": default}
    if help is not None:
        changes["description"] = help
    return FieldInfo.merge_field_infos(source, **changes)


def refusal(error: ParameterError) -> PydanticCustomError:
    """A ParameterError raised by a field's own check, as a pydantic error the adapter turns back into it.

    Raised inside a field validator, it lets pydantic go on in field order, so the first bad field is named.
    """
    return PydanticCustomError(
        "psra_parameter", "{allowed}", {"name": error.name, "value": error.value, "allowed": error.allowed}
    )


def parameter_error(model: type[BaseModel], error: ValidationError) -> ParameterError:
    """The one adapter: the first problem of a ``ValidationError`` as ParameterError(name, value, allowed)."""
    first = error.errors()[0]
    loc = first.get("loc") or ("parameters",)
    ctx = first.get("ctx") or {}
    if first["type"] == "psra_parameter":
        return ParameterError(ctx["name"], ctx["value"], ctx["allowed"])
    name = str(loc[0])
    value = first.get("input")
    if first["type"] == "extra_forbidden":
        return ParameterError("parameter", name, "one of " + ", ".join(model.model_fields))
    if first["type"] == "missing":
        return ParameterError(name, "missing", "a value (every parameter is required here)")
    field = model.model_fields.get(name)
    extra = field.json_schema_extra if field is not None else None
    allowed = str(extra["allowed"]) if isinstance(extra, dict) and "allowed" in extra else str(first["msg"])
    return ParameterError(name, redact(value) if isinstance(value, str) else value, allowed)


class ParamModel(BaseModel):
    """Strict, frozen, no unknown keys: a set of parameters and its named presets."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    #: Preset name -> the values that differ from the field defaults (merged with the base classes').
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: The field defaults (the notebook's small run).
    NOTEBOOK: ClassVar[Self]
    #: The quick report's values (``psra-bench report --quick``).
    QUICK: ClassVar[Self]
    #: The full report's values (``psra-bench report``).
    FULL: ClassVar[Self]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Build the named presets once the class is complete (``Model.NOTEBOOK``, ``.QUICK``, ``.FULL``, ...)."""
        super().__pydantic_init_subclass__(**kwargs)
        for name in dict.fromkeys([*_PRESET_NAMES, *cls.preset_names()]):
            setattr(cls, name.upper(), cls.preset(name))

    @classmethod
    def preset_names(cls) -> list[str]:
        """Every preset this class has (its own and its bases')."""
        names: dict[str, None] = dict.fromkeys(_PRESET_NAMES)
        for klass in reversed(cls.__mro__):
            names.update(dict.fromkeys(klass.__dict__.get("PRESETS", {})))
        return list(names)

    @classmethod
    def preset_values(cls, name: str) -> dict[str, Any]:
        """The values preset ``name`` sets, merged from the base classes down (the subclass wins)."""
        values: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            values.update(klass.__dict__.get("PRESETS", {}).get(name, {}))
        return values

    @classmethod
    def preset(cls, name: str) -> Self:
        """Preset ``name``, validated (``notebook`` is the field defaults)."""
        if name not in cls.preset_names():
            raise ParameterError("preset", name, "one of " + ", ".join(cls.preset_names()))
        return cls.validated(cls.preset_values(name))

    @classmethod
    def validated(cls, values: Mapping[str, object]) -> Self:
        """The model of ``values`` (fields left out keep their default); ParameterError naming the first bad one."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as e:
            raise parameter_error(cls, e) from None

    def replace(self, **changes: object) -> Self:
        """A validated copy with ``changes`` (ParameterError naming the first bad value)."""
        return self.validated(self.values() | changes)

    def values(self) -> dict[str, Any]:
        """Every field's value, by name."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    @classmethod
    def help(cls, name: str) -> str:
        """The help text of field ``name``."""
        return cls.model_fields[name].description or name

    @classmethod
    def field_default(cls, name: str) -> Any:
        """The default of field ``name`` (a fresh copy of a list)."""
        return cls.model_fields[name].get_default(call_default_factory=True)


def _literal(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    return repr(value)


def _type_name(annotation: Any) -> str:
    """An annotation as the cell writes it; ``X | None`` as ``Optional[X]`` (what papermill's parser reads)."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return f"Optional[{_type_name(inner)}]"
    return repr(annotation).replace("typing.", "")


def check_writable_dir(name: str, path: str | os.PathLike[str]) -> Path:
    """The folder ``path``, made if missing and proven writable with a probe file; else one ParameterError sentence."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ParameterError(name, str(path), f"a folder this user can create and write to ({reason})") from None
    return folder


def output_dir_param(help: str, default: str = "reports/_scratch") -> Any:  # noqa: A002
    """An ``output_dir``-like field: a folder path (a non-empty string)."""
    return param(default, help, allowed="a folder path (a non-empty string)", pattern=r"\S")


def verdicts_param(default: int, help: str = "dataset scale (rows in psra_verdicts)") -> Any:  # noqa: A002
    """A ``verdicts`` field: the dataset scale, 1 to MAX_VERDICTS rows."""
    return param(default, help, allowed=f"a whole number from 1 to {MAX_VERDICTS:,}", ge=1, le=MAX_VERDICTS)


def seed_param(help: str, default: int = 42) -> Any:  # noqa: A002
    """A ``seed`` field: a whole number ≥ 0."""
    return param(default, help, allowed="a whole number ≥ 0", ge=0)


class NotebookParams(ParamModel):
    """What every notebook is given: where results go, which database, the dataset scale and seed."""

    #: The notebook these parameters belong to (e.g. "01_query_latency").
    NOTEBOOK_NAME: ClassVar[str] = ""
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"quick": {"verdicts": 20_000}, "full": {"verdicts": 1_000_000}}

    output_dir: str = output_dir_param("where the JSON results and PNG plots go")
    database: str = param(
        DEFAULT_DATABASE,
        "a database NAME on the configured/embedded server (never a DSN)",
        allowed="a lower-case PostgreSQL name (letters, digits, _), not a DSN",
        pattern=DATABASE_PATTERN,
    )
    verdicts: int = verdicts_param(20_000)
    seed: int = seed_param("dataset seed")

    @field_validator("output_dir", mode="before")
    @classmethod
    def _path_as_text(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @classmethod
    def cell_fields(cls) -> list[str]:
        """The fields the notebook's parameters cell defines, in order."""
        return [
            name
            for name, f in cls.model_fields.items()
            if not (isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("notebook") is False)
        ]

    @classmethod
    def cell(cls) -> str:
        """The source of the notebook's papermill ``parameters`` cell: ``name: type = default  # help``."""
        lines = [
            f"{name}: {_type_name(cls.model_fields[name].annotation)} = {_literal(cls.field_default(name))}"
            f"  # {cls.help(name)}"
            for name in cls.cell_fields()
        ]
        if any("Optional[" in line for line in lines):
            lines.insert(
                0, "from typing import Optional  # papermill --help-notebook reads Optional[X], not X | None\n"
            )
        return "\n".join(lines)

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> Self:
        """The parameters as the notebook holds them (its globals after papermill injected any), validated."""
        names = cls.cell_fields()
        missing = [n for n in names if n not in namespace]
        if missing:
            raise ParameterError("parameters cell", ", ".join(missing), "every parameter defined (run it first)")
        return cls.validated({n: namespace[n] for n in names})

    def papermill(self) -> dict[str, Any]:
        """The values to hand papermill (every cell parameter, so the run does not depend on a notebook's defaults)."""
        return {n: getattr(self, n) for n in self.cell_fields()}

    def check(self) -> object:
        """What the notebook works with, once ``output_dir`` is proven writable (the values are valid already)."""
        self.check_output_dir()
        return None

    def check_output_dir(self) -> None:
        """``output_dir`` must be a folder this user can write, checked before any measurement."""
        check_writable_dir("output_dir", self.output_dir)
