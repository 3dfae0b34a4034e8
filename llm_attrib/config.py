"""Options as frozen, validated dataclasses: one declaration per option, from which CLI flags and recipe keys come.

A method's options are a subclass of `Config` whose fields are declared with `option`::

    @dataclass(frozen=True)
    class InfluenceConfig(Config):
        batch_size: int = option(8, "examples per forward/backward pass", check=at_least(1))

Constructing a config validates every field (type, allowed values, range) and raises `UserInputError` naming the
field and what is allowed, so a wrong value never waits until `fit`. `add_arguments` turns the fields into
``--batch-size``-style flags of an argparse parser and `from_arguments` reads them back; `from_dict` and `to_dict`
are the recipe's and ``save_pretrained``'s view (JSON types only).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

from llm_attrib.errors import UserInputError


class ConfigError(UserInputError):
    """A config field holds a value it does not allow; ``field`` names it, ``problem`` says what is allowed."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem

Check = Callable[[Any], "str | None"]
"""``check(value) -> None`` if ``value`` is allowed, else a short phrase saying what is (``"at least 1"``)."""

C = TypeVar("C", bound="Config")


def option(default: Any, help: str, *, choices: Sequence[Any] | None = None, check: Check | None = None,
           flag: bool = True) -> Any:
    """A config field: its ``default``, a one-line ``help``, allowed ``choices`` or a ``check``; ``flag=False``
    keeps it out of the command line (options only Python callers can give, e.g. a projection per layer)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "check": check,
                                                        "flag": flag})


def at_least(low: float) -> Check:
    """Allow numbers ``≥ low`` (None passes: optional fields are checked only when given)."""
    return lambda value: None if value is None or value >= low else f"at least {low:g}"


def in_open_interval(low: float, high: float) -> Check:
    """Allow numbers strictly between ``low`` and ``high``."""
    return lambda value: None if value is None or low < value < high else f"strictly between {low:g} and {high:g}"


def damping_check(value: Any) -> str | None:
    """A damping is a finite number ≥ 0 or ``"heuristic"`` (0.1 × each layer's mean eigenvalue)."""
    if value == "heuristic" or (isinstance(value, float) and math.isfinite(value) and value >= 0):
        return None
    return "a non-negative number or 'heuristic'"


def _allowed_types(hint: Any) -> tuple[type, ...]:
    """The runtime types a field's annotation admits (``int | None`` → ``(int, NoneType)``)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _allowed_types(arg))
    if origin is typing.Literal:
        return tuple({type(arg) for arg in typing.get_args(hint)})
    if origin is not None:
        return (origin,)
    return (type(None),) if hint is None else (hint,)


def _coerce(value: Any, allowed: tuple[type, ...]) -> Any:
    """``value`` as one of the ``allowed`` types where that loses nothing (an int for a float field, a list for a
    tuple); bools are never numbers."""
    if isinstance(value, bool):
        return value
    if float in allowed and isinstance(value, int) and int not in allowed:
        return float(value)
    if tuple in allowed and isinstance(value, list):
        return tuple(value)
    if Path in allowed and isinstance(value, str):
        return Path(value)
    return value


def _type_name(allowed: tuple[type, ...]) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in allowed)


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every method's options (see the module docstring). Subclasses are frozen dataclasses."""

    flag_prefix: ClassVar[str] = ""
    """Prefix of the generated CLI flags (``"trak-"`` gives ``--trak-projection-dim``), for parsers with several."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            allowed = _allowed_types(hints[f.name])
            value = _coerce(getattr(self, f.name), allowed)
            object.__setattr__(self, f.name, value)
            if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
                raise ConfigError(f.name, f"must be {_type_name(allowed)}, not {value!r}")
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ConfigError(f.name, f"must be one of {list(choices)}, not {value!r}")
            check = f.metadata.get("check")
            problem = check(value) if check is not None else None
            if problem is not None:
                raise ConfigError(f.name, f"must be {problem}, not {value!r}")
        self.validate()

    def validate(self) -> None:
        """Checks that involve several fields; raise `ConfigError` naming the one to change."""

    # ------------------------------------------------------------------------------------- dictionaries
    def to_dict(self) -> dict[str, Any]:
        """The options as JSON types (tuples become lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any], where: str = "") -> C:
        """A config from ``values`` (unknown keys refused, naming the allowed ones); errors name a field as
        ``{where}.{field}`` (``method.options.batch_size``), or the field alone without ``where``."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise UserInputError(f"{where or cls.__name__}: unknown option {unknown[0]!r}; allowed: {', '.join(names)}")
        try:
            return cls(**dict(values))
        except ConfigError as error:
            raise ConfigError(f"{where}.{error.field}" if where else error.field, error.problem) from None

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def choices(cls, name: str) -> list[Any]:
        """The values field ``name`` allows (for a parser that declares the same option with another default)."""
        return list(next(f for f in dataclasses.fields(cls) if f.name == name).metadata["choices"])

    @classmethod
    def describe(cls) -> dict[str, str]:
        """``{field: "type, default …: help"}``: the recipe keys this config accepts."""
        hints = typing.get_type_hints(cls)
        return {f.name: f"{_type_name(_allowed_types(hints[f.name]))}, default {f.default!r}: {f.metadata['help']}"
                for f in dataclasses.fields(cls)}

    # ------------------------------------------------------------------------------------- command line
    @classmethod
    def flag_fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if f.metadata.get("flag", True)]

    @classmethod
    def flag(cls, name: str) -> str:
        return "--" + cls.flag_prefix + name.replace("_", "-")

    @classmethod
    def dest(cls, name: str) -> str:
        return (cls.flag_prefix + name).replace("-", "_")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                      defaults: Mapping[str, Any] | None = None) -> None:
        """One flag per field (``--batch-size``): the value is parsed as the field's type and validated when the
        config is built (`from_arguments`), so an error names the field. ``defaults`` override the field defaults
        in this parser."""
        hints = typing.get_type_hints(cls)
        for f in cls.flag_fields():
            default = (defaults or {}).get(f.name, f.default)
            allowed = _allowed_types(hints[f.name])
            help_text = f"{f.metadata['help']} (default: {default})"
            if allowed == (bool,):
                parser.add_argument(cls.flag(f.name), dest=cls.dest(f.name), default=default,
                                    action=argparse.BooleanOptionalAction, help=help_text)
                continue
            choices = f.metadata.get("choices")
            parser.add_argument(cls.flag(f.name), dest=cls.dest(f.name), default=default,
                                type=_parser_of(hints[f.name]), choices=list(choices) if choices is not None else None,
                                help=help_text, metavar=None if choices is not None else f.name.upper())

    @classmethod
    def from_arguments(cls: type[C], args: argparse.Namespace, **fixed: Any) -> C:
        """The config from parsed flags (fields without a flag keep their default unless given in ``fixed``)."""
        values = {f.name: getattr(args, cls.dest(f.name)) for f in cls.flag_fields() if hasattr(args, cls.dest(f.name))}
        try:
            return cls(**{**values, **fixed})
        except ConfigError as error:
            flag = cls.flag(error.field) if error.field in values else error.field
            raise ConfigError(flag, error.problem) from None


BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
"""Flag texts of an optional bool field (a plain bool field is a ``--x/--no-x`` switch)."""


def _parser_of(hint: Any) -> Callable[[str], Any]:
    """Parse a flag's text as the first type of the field's annotation ``hint`` that accepts it (``"none"`` for
    None; numbers before strings; a tuple from comma-separated items of its element type; any other class, such as
    `pathlib.Path`, from the text): ``--damping 1e-8`` is a float, ``--damping heuristic`` a string,
    ``--query-rank none`` None, ``--methods a,b`` ``("a", "b")``, ``--bos true`` True (an optional bool)."""
    allowed = _allowed_types(hint)
    element = _tuple_element(hint)

    def parse(text: str) -> Any:
        if type(None) in allowed and text.lower() in ("none", "null"):
            return None
        if bool in allowed and text.lower() in BOOLEANS:
            return BOOLEANS[text.lower()]
        for kind in (int, float):
            if kind in allowed:
                try:
                    return kind(text)
                except ValueError:
                    pass
        if str in allowed:
            return text
        if tuple in allowed:
            return tuple(element(part) for part in text.split(",") if part)
        other = [kind for kind in allowed if kind not in (int, float, bool, type(None))]
        if other:
            return other[0](text)
        raise argparse.ArgumentTypeError(f"expected {_type_name(allowed)}, got {text!r}")

    parse.__name__ = _type_name(allowed)  # argparse names the type in its error
    return parse


def _tuple_element(hint: Any) -> Callable[[str], Any]:
    """The element type of a ``tuple[X, ...]`` in ``hint`` (int for a bare ``tuple``)."""
    for arg in (typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)):
        if typing.get_origin(arg) is tuple and typing.get_args(arg):
            return typing.get_args(arg)[0]
    return int
