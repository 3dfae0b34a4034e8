"""`ValuationResult`: one value per training point, with its standard error and sample count.

Sign: a **higher value means a more valuable training point** (removing it would lower the utility, e.g.
validation accuracy). Mislabelled or harmful points get low (often negative) values.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llm_attrib.errors import UserInputError


@dataclass(frozen=True)
class ValuationResult:
    """Values of ``n`` training points.

    values: float ``[n]``, higher = more valuable. stderr: float ``[n]`` standard error of each value
    (0 for closed forms, NaN where a method gives none). counts: int ``[n]`` number of samples
    (permutations, subsets, bags, batches) that informed each value. n_utility_evaluations: how many
    times the utility (train a model on a subset, score it) was queried.
    """

    values: np.ndarray
    stderr: np.ndarray
    counts: np.ndarray
    method: str
    n_utility_evaluations: int = 0
    ids: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.values)
        for name in ("stderr", "counts"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, values has {n}")
        if self.ids is not None and len(self.ids) != n:
            raise ValueError(f"ids has {len(self.ids)} entries, values has {n}")

    def __len__(self) -> int:
        return len(self.values)

    def ranking(self, ascending: bool = False) -> np.ndarray:
        """Indices of training points, most valuable first (``ascending=True``: least valuable first).

        Ties keep index order; NaN values (e.g. a point never out of bag) rank last either way.
        """
        key = np.where(np.isnan(self.values), np.inf, self.values if ascending else -self.values)
        return np.argsort(key, kind="stable")

    def to_records(self) -> list[dict[str, Any]]:
        """One dict per training point: index, id, value, stderr, count, rank (0 = most valuable)."""
        ids = self.ids if self.ids is not None else np.arange(len(self))
        ranks = np.empty(len(self), dtype=int)
        ranks[self.ranking()] = np.arange(len(self))
        return [
            {"index": i, "id": _plain(ids[i]), "value": float(self.values[i]), "stderr": float(self.stderr[i]),
             "count": int(self.counts[i]), "rank": int(ranks[i])}
            for i in range(len(self))
        ]

    def to_frame(self) -> Any:
        """A pandas DataFrame of `to_records` (pandas is imported only here)."""
        import pandas as pd

        return pd.DataFrame.from_records(self.to_records()).set_index("index")

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write one row per training point (atomically)."""
        from llm_attrib.store import atomic_path  # imports torch: only when writing

        records = self.to_records()
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]) if records else ["index", "value"])
            writer.writeheader()
            writer.writerows(records)

    def to_json(self, path: str | os.PathLike) -> None:
        """Write method, evaluation count and one record per training point (atomically)."""
        from llm_attrib.store import write_json  # imports torch: only when writing

        write_json(path, {"method": self.method, "n_utility_evaluations": self.n_utility_evaluations,
                          "extra": self.extra, "points": self.to_records()})

    def save(self, path: str | os.PathLike) -> None:
        """Write CSV or JSON, chosen by the file suffix."""
        suffix = Path(path).suffix.lower()
        if suffix not in _WRITERS:
            raise UserInputError(f"cannot write values to {path}: use a .csv or .json file name")
        _WRITERS[suffix](self, path)


_WRITERS: dict[str, Callable[[ValuationResult, str | os.PathLike], None]] = {
    ".csv": ValuationResult.to_csv,
    ".json": ValuationResult.to_json,
}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
