"""What a setting is: how a section declares it (`setting`), and the `Option` the package reads
it as, which converts the values given for it and says which of them it refuses."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from cvae_dist.config.ranges import Range
from cvae_dist.errors import UserError


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    allowed: Range | None = None,
    bookkeeping: bool = False,
    hparam: str | None = None,
    formerly: str | None = None,
) -> Any:
    """A settings field with what the rest of the package needs to know about it (see `Option`)."""
    facts = {"allowed": allowed, "bookkeeping": bookkeeping, "hparam": hparam, "formerly": formerly}
    return field(default=default, default_factory=factory, metadata=facts)


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docstring under each field of a dataclass, used as its --help text."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = following.value.value
    return docs


@dataclass(frozen=True)
class Option:
    """One flag: its section, type, documentation and what the package needs to know about it."""

    name: str
    """The flag's name (without --), as in YAML files and config.yaml."""
    section: str
    """The Config section it belongs to."""
    type: Any
    """Its annotated type."""
    default: Any
    """Its default value."""
    help: str
    """Its one-line docstring, the --help text."""
    allowed: Range | None = None
    """The numbers it may take (each item's, for a list); every numeric setting has one, and only those."""
    bookkeeping: bool = False
    """It says where a run runs and writes, and how often, not what it computes: changing it does not make another run."""
    hparam: str | None = None
    """A hyperparameter the course's comparisons vary, shown under this short name in the report's table."""
    formerly: str | None = None
    """The name it had before a rename, still accepted in flags, YAML and saved config.yaml files."""

    def __post_init__(self) -> None:
        # Ranges live with their fields, so forgetting one would silently let any number through.
        if self.numeric and self.allowed is None:
            raise TypeError(f"setting {self.name!r} is a number: state the values it may take, as setting(..., allowed=Range(...))")
        if not self.numeric and self.allowed is not None:
            raise TypeError(f"setting {self.name!r} is not a number, so it takes no range (allowed=)")

    @property
    def base_type(self) -> Any:
        if typing.get_origin(self.type) in (typing.Union, types.UnionType):
            return next(a for a in typing.get_args(self.type) if a is not type(None))
        return self.type

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.type)

    @property
    def choices(self) -> tuple | None:
        return typing.get_args(self.base_type) if typing.get_origin(self.base_type) is Literal else None

    @property
    def numeric(self) -> bool:
        """Whether it is a number or a list of numbers."""
        kind = self.base_type
        item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else kind
        return item in (int, float)

    def coerce(self, value: Any, source: str) -> Any:
        """Check and convert a value from YAML or the command line; `source` names where it came from."""
        label = setting_label(self.name, source)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and self.optional):
            if self.optional:
                return None
            raise UserError(f"{label} may not be empty")
        base = self.base_type
        try:
            if self.choices is not None:
                if value not in self.choices:
                    raise UserError(f"{label} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
                return value
            if base is bool:
                return _as_bool(value)
            if typing.get_origin(base) is list:
                items = value if isinstance(value, list) else [v for v in str(value).replace(",", " ").split() if v]
                (item_type,) = typing.get_args(base)
                return [as_scalar(item_type, v) for v in items]
            return as_scalar(base, value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int too big for a float
            raise UserError(f"{label} must be {_type_name(self.type)}, got {value!r}") from None

    def problem(self, value: Any) -> str | None:
        """What is wrong with a value of the right type ('must be ...'), or None."""
        kind = self.base_type
        if value is None or self.choices is not None or kind is bool:
            return None
        if kind is str:
            return "must be a non-empty text without NUL characters" if not value or "\0" in value else None
        assert self.allowed is not None  # every numeric setting has one (__post_init__)
        if typing.get_origin(kind) is list:
            unordered = any(a >= b for a, b in zip(value, value[1:]))
            return f"must be increasing, each {self.allowed}" if unordered or any(map(self.allowed.problem, value)) else None
        return self.allowed.problem(value)


def describe(sections: dict[str, type]) -> dict[str, Option]:
    """Every field of the section dataclasses (section name -> class) -> its Option, by flag name."""
    table = {}
    for section, cls in sections.items():
        hints, docs = typing.get_type_hints(cls), field_docs(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            table[f.name] = Option(f.name, section, hints[f.name], default, docs.get(f.name, ""), **f.metadata)
    return table


def setting_label(name: str, source: str | None) -> str:
    """How a message names a setting: `--lr` when it came from a default, or from the command line as
    the flag typed there (a former name stays that name); `--config run.yaml: lr` when it came from a file."""
    if source is None:
        return f"--{name}"
    return source if is_flag(source) else f"{source}: {name}"


def is_flag(source: str | None) -> bool:
    """Whether a setting's source is a command-line flag (not a file)."""
    return source is not None and source.startswith("--") and " " not in source


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def as_scalar(kind: type, value: Any) -> Any:
    """`value` as an int, float or str (`kind`); TypeError or ValueError where it is not one."""
    if isinstance(value, bool) and kind is not bool:
        raise TypeError(value)  # YAML's `true` is not a number or a path
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value) if not isinstance(value, str) else int(value, 10)
    if kind is float:
        return float(value)
    if kind is str:
        if not isinstance(value, (str, int, float)):
            raise TypeError(value)
        return str(value)
    raise TypeError(kind)


def _type_name(kind: Any) -> str:
    return str(kind).replace("typing.", "").replace("<class '", "").replace("'>", "")
