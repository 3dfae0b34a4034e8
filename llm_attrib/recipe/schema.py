"""The recipe schema: the `Recipe` dataclasses a YAML recipe parses into, and their checks.

A field's type hint says what the YAML may hold there; ``metadata={"path": kind}`` marks a path that
`llm_attrib.recipe.yaml_parsing` resolves (``path``: a file or folder, ``model``: a model folder or ``demo``,
``dataset``: a local data set or a builder / hub name).

A `DataSpec` loads records the way `datasets` does: a local file or folder (a saved ``Dataset`` too), a builder
with ``data_files`` (``path: json``), or a hub name; then a seeded random sample of ``limit`` rows (kept in file
order; ids from the column ``id`` names, else an ``id`` column, else row numbers) and the column mapping.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from llm_attrib.data import check_unique_ids, load_records
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
        column = self.id or ("id" if "id" in table.column_names else None)
        if column is None:
            return table, rows
        ids = list(table[column])
        check_unique_ids(ids, f"{where}.id {column!r}")
        return table, ids

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
    run: str | None = field(default=None, metadata=PATH)
    """``name: magic``: the replayable run folder (``llm-attrib train``) whose records and final model are traced."""


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
    base_model: str | None = field(default=None, metadata=MODEL_PATH)
    """A peft adapter's local base model folder, instead of the adapter's ``base_model_name_or_path``."""
    encoding: dict[str, Any] | None = None
    """trace: `llm_attrib.data.EncodingConfig` fields (``bos``, ``eos`` …), for training records and queries."""
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
