"""Recipes: one YAML file describes a whole job, run by ``llm-attrib run recipes/<name>.yaml`` (`llm_attrib.apps.run`).

`load_recipe` parses the file with pyyaml into the `Recipe` dataclasses, after ``--set KEY=VALUE`` overrides
(dotted keys, list items by index, VALUE parsed as YAML). Unknown keys and values of the wrong kind are refused
with a one-line `UserInputError` naming the key and what is allowed. Relative paths resolve against the recipe's
folder; paths given by an override, against the working directory.

A `DataSpec` loads records the way `datasets` does: a local file or folder (a saved ``Dataset`` too), a builder
with ``data_files`` (``path: json``), or a hub name; then a seeded random sample of ``limit`` rows (kept in file
order, ids = row numbers unless an ``id`` column is named) and the column mapping.
"""

from __future__ import annotations

import dataclasses
import os
import random
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Literal, Sequence, Union, get_args, get_origin, get_type_hints

import yaml

from llm_attrib.data import DATA_BUILDERS, load_records
from llm_attrib.errors import UserInputError

DEMO = "demo"
"""``model: demo`` is the embedded demo model (`llm_attrib.demo`); ``train: demo`` its training documents."""

PATH, MODEL_PATH, DATASET_PATH = ({"path": kind} for kind in ("path", "model", "dataset"))
COLUMN_KEYS = ("text", "prompt", "completion", "label", "features")


@dataclass(frozen=True)
class DataSpec:
    """Records from ``datasets.load_dataset`` and how their columns map to record fields.

    ``text`` (a document) or ``prompt`` (one column, or several joined by new lines, empty ones skipped) with
    ``completion``; ``label`` and ``features`` (numeric columns) are for valuation.
    """

    path: str = field(metadata=DATASET_PATH)
    data_files: str | list[str] | None = field(default=None, metadata=PATH)
    config: str | None = None
    split: str = "train"
    text: str | None = None
    prompt: str | list[str] | None = None
    completion: str | None = None
    id: str | None = None
    label: str | None = None
    features: list[str] | None = None
    limit: int | None = None

    def check(self, where: str) -> None:
        if self.prompt is not None and self.text is not None:
            raise UserInputError(f"{where}: give `text` or `prompt` (with `completion`), not both")
        if self.completion is not None and self.prompt is None:
            raise UserInputError(f"{where}: a `completion` column goes with a `prompt` column; name it")
        if self.features is not None and self.text is not None:
            raise UserInputError(f"{where}: give `features` (numeric columns) or `text` (embedded by `model`), "
                                 "not both")
        if self.limit is not None and self.limit < 1:
            raise UserInputError(f"{where}.limit must be a positive number of rows, not {self.limit}")

    @property
    def prompt_columns(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt or [])

    @property
    def text_column(self) -> str | None:
        """``text``; ``"text"`` when the mapping names no other field (a plain document data set)."""
        if self.text is None and self.prompt is None and self.label is None and self.features is None:
            return "text"
        return self.text

    def columns(self) -> list[str]:
        """Every column the mapping names."""
        named = [*self.prompt_columns, self.completion, self.text_column, self.id, self.label, *(self.features or [])]
        return [column for column in named if column is not None]

    def with_columns_of(self, other: "DataSpec") -> "DataSpec":
        """This spec with the column mapping of ``other`` wherever it names none itself."""
        inherited = {key: getattr(other, key) for key in COLUMN_KEYS if getattr(self, key) is None}
        return dataclasses.replace(self, **inherited)

    def load(self, seed: int, where: str) -> tuple[Any, list[Any]]:
        """The `datasets.Dataset` (``limit`` rows drawn with ``seed``, in file order) and each row's id."""
        table = self._load_table(where)
        missing = [column for column in self.columns() if column not in table.column_names]
        if missing:
            raise UserInputError(f"{where}: no column {missing[0]!r} in {self.path}; "
                                 f"columns present: {', '.join(table.column_names)}")
        rows = list(range(len(table)))
        if self.limit is not None and self.limit < len(table):
            rows = sorted(random.Random(seed).sample(rows, self.limit))
            table = table.select(rows)
        if len(table) == 0:
            raise UserInputError(f"{where}: {self.path} split {self.split!r} has no rows")
        return table, list(table[self.id]) if self.id else rows

    def _load_table(self, where: str) -> Any:
        if Path(self.path).exists():
            if self.data_files is not None or self.config is not None:
                raise UserInputError(f"{where}: `data_files` and `config` go with a builder or hub name "
                                     f"(e.g. path: json), not with the local path {self.path}")
            return load_records(self.path, split=self.split)
        import datasets

        try:
            return datasets.load_dataset(self.path, self.config, data_files=self.data_files, split=self.split)
        except Exception as error:  # the loader's own message, on one line
            message = " ".join(str(error).split()) or type(error).__name__
            raise UserInputError(f"{where}: datasets.load_dataset({self.path!r}) failed: {message}") from error

    def records(self, table: Any, ids: Sequence[Any]) -> list[dict[str, Any]]:
        """Rows as records ``{"id", "prompt", "completion"}`` (completion if mapped) or ``{"id", "text"}``."""
        if self.prompt is None:
            return [{"id": id_, "text": row[self.text_column]} for id_, row in zip(ids, table)]
        records = []
        for id_, row in zip(ids, table):
            record = {"id": id_, "prompt": "\n".join(str(row[c]) for c in self.prompt_columns if row[c])}
            if self.completion is not None:
                record["completion"] = row[self.completion]
            records.append(record)
        return records


@dataclass(frozen=True)
class Query:
    """An inline query; without a completion the model generates one."""

    prompt: str
    completion: str | None = None

    def check(self, where: str) -> None:
        if not self.prompt.strip():
            raise UserInputError(f"{where}.prompt is empty; give the prompt text")
        if self.completion is not None and not self.completion.strip():
            raise UserInputError(f"{where}.completion is empty; give its text, or leave the key out to have the "
                                 "model generate one")


@dataclass(frozen=True)
class MethodSpec:
    """The attributor (trace) or valuation method (value) by registry name, its options, and per-task extras."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    prefilter: str | None = None
    candidates: int | None = None
    estimator: str | None = None
    factors: str | None = field(default=None, metadata=PATH)


@dataclass(frozen=True)
class GenerateSpec:
    """Greedy generation for queries without a completion: at most ``max_new_tokens``, cut before any ``stop``."""

    max_new_tokens: int = 32
    stop: list[str] = field(default_factory=lambda: ["\n"])


@dataclass(frozen=True)
class OutputSpec:
    """Where results go, and how many top records (trace) or rows (value) the report shows."""

    dir: str = field(metadata=PATH)
    top_k: int = 5

    def check(self, where: str) -> None:
        if self.top_k < 1:
            raise UserInputError(f"{where}.top_k must be at least 1, not {self.top_k}")


@dataclass(frozen=True)
class Recipe:
    """A whole job. Which keys a task uses is up to the task (`llm_attrib.apps.run.TASKS`)."""

    task: str
    method: MethodSpec
    output: OutputSpec
    train: DataSpec | Literal["demo"]
    model: str | None = field(default=None, metadata=MODEL_PATH)
    queries: list[Query] | DataSpec | None = None
    validation: DataSpec | None = None
    generate: GenerateSpec | None = None
    seed: int = 0

    def get(self, key: str) -> Any:
        """The value at a dotted ``key`` (``None`` where a part is unset or not a mapping)."""
        value: Any = self
        for part in key.split("."):
            value = getattr(value, part, None) if dataclasses.is_dataclass(value) else None
        return value


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
