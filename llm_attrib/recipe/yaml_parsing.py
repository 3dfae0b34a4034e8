"""Generic YAML parsing of a recipe: ``--set`` overrides, type-checked dataclasses, relative paths.

`load_recipe` parses the file with pyyaml into the `Recipe` dataclasses (`llm_attrib.recipe.schema`), after
``--set KEY=VALUE`` overrides (dotted keys, list items by index, VALUE parsed as YAML). Unknown keys and values of
the wrong kind are refused with a one-line `UserInputError` naming the key and what is allowed. Relative paths
resolve against the recipe's folder; paths given by an override, against the working directory.
"""

from __future__ import annotations

import dataclasses
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Literal, Sequence, Union, get_args, get_origin, get_type_hints

import yaml

from llm_attrib.data import DATA_BUILDERS
from llm_attrib.errors import UserInputError
from llm_attrib.recipe.schema import DEMO, Recipe


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = (), tasks: Collection[str] = ()) -> Recipe:
    """Parse and check the recipe at ``path`` after ``overrides`` (``"KEY=VALUE"``); ``tasks``: the task names."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"no recipe file at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserInputError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    try:
        overridden = apply_overrides(raw, overrides)
        recipe = _parse(Recipe, raw, "", _Paths(path.parent.resolve(), overridden))
        if tasks and recipe.task not in tasks:
            raise UserInputError(f"task: unknown task {recipe.task!r}; choose one of {', '.join(tasks)}")
    except UserInputError as error:
        raise UserInputError(f"{path.name}: {error}") from None
    return recipe


def apply_overrides(raw: Any, overrides: Sequence[str]) -> set[str]:
    """Set each ``KEY=VALUE`` of ``overrides`` in ``raw`` (in place); the dotted keys set."""
    if not isinstance(raw, dict):
        keys = ", ".join(f.name for f in dataclasses.fields(Recipe))
        raise UserInputError(f"a recipe is a YAML mapping of keys ({keys})")
    keys = set()
    for text in overrides:
        key, separator, value = text.partition("=")
        if not separator or not key:
            raise UserInputError(f"--set {text!r}: write KEY=VALUE, e.g. --set train.limit=100")
        *parents, last = key.split(".")
        node = raw
        for depth, part in enumerate(parents):
            child = _child(node, part, key, create=True)
            if not isinstance(child, (dict, list)):
                parent = ".".join(parents[:depth + 1])
                raise UserInputError(f"--set {key}: {parent} is {child!r}, not a mapping or list")
            node = child
        _child(node, last, key, create=False)  # checks the index of a list
        node[int(last) if isinstance(node, list) else last] = yaml.safe_load(value)
        keys.add(key)
    return keys


def _child(node: dict | list, part: str, key: str, create: bool) -> Any:
    if isinstance(node, dict):
        return node.setdefault(part, {}) if create else node.get(part)
    if not part.isdigit() or int(part) >= len(node):
        raise UserInputError(f"--set {key}: {part!r} is not an index of a list of {len(node)} items")
    return node[int(part)]


@dataclass(frozen=True)
class _Paths:
    """Resolves relative paths: against the recipe's folder, or the working directory for overridden keys."""

    recipe_dir: Path
    overridden: set[str]

    def resolve(self, value: Any, key: str, kind: str) -> Any:
        if isinstance(value, list):
            return [self.resolve(item, key, kind) for item in value]
        if (kind == "model" and value == DEMO) or "://" in value:
            return value
        base = Path.cwd() if any(key == k or key.startswith(k + ".") for k in self.overridden) else self.recipe_dir
        local = base / Path(value).expanduser()
        if kind == "model" and not local.is_dir():
            raise UserInputError(f"{key}: no model folder at {local}; give a local model folder or '{DEMO}' "
                                 "(e.g. --set model=PATH)")
        if kind == "dataset" and not local.exists():
            if value.startswith((".", "/", "~")) or Path(value).suffix in DATA_BUILDERS:
                raise UserInputError(f"{key}: no such file or folder {local}")
            return value  # a datasets builder or hub name
        return os.path.normpath(local)


def _key(where: str, name: str | int) -> str:
    return f"{where}.{name}" if where else str(name)


def _parse(hint: Any, value: Any, where: str, paths: _Paths) -> Any:
    """``value`` checked against the type ``hint`` (dataclasses recursively); a one-line error otherwise."""
    if dataclasses.is_dataclass(hint):
        return _parse_dataclass(hint, value, where, paths)
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is not type(None) and _fits(option, value):
                return _parse(option, value, where, paths)
    elif origin is list and isinstance(value, list):
        return [_parse(args[0], item, _key(where, i), paths) for i, item in enumerate(value)]
    elif hint is Any or _fits(hint, value):
        return value
    raise UserInputError(f"{where}: expected {_describe(hint)}, got {_short(value)}")


def _parse_dataclass(cls: type, value: Any, where: str, paths: _Paths) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(value, dict):
        raise UserInputError(f"{where}: expected {_describe(cls)}, got {_short(value)}")
    for name in value:
        if name not in fields:
            raise UserInputError(f"{where + ': ' if where else ''}unknown key {name!r}; allowed: {', '.join(fields)}")
    required = [name for name, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for name in required:
        if value.get(name) is None:
            raise UserInputError(f"{_key(where, name)} is required ({_describe(get_type_hints(cls)[name])})")
    hints = get_type_hints(cls)
    parsed = {}
    for name, item in value.items():
        parsed[name] = _parse(hints[name], item, _key(where, name), paths)
        kind = fields[name].metadata.get("path")
        if kind and parsed[name] is not None:
            parsed[name] = paths.resolve(parsed[name], _key(where, name), kind)
    result = cls(**parsed)
    if hasattr(result, "check"):
        result.check(where)
    return result


def _fits(hint: Any, value: Any) -> bool:
    """Whether ``value`` has the shape of ``hint`` (a mapping for a dataclass, a list for a list, ...)."""
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint) or origin is dict or hint is dict:
        return isinstance(value, dict)
    if origin is list:
        return isinstance(value, list)
    if origin is Literal:
        return value in get_args(hint)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(hint, type) and isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if dataclasses.is_dataclass(hint):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(hint))}"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(option) for option in args if option is not type(None))
    if origin is list:
        return f"a list (each item {_describe(args[0])})"
    if origin is Literal:
        return " or ".join(repr(option) for option in args)
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, "a mapping")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
