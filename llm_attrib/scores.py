"""`Scores`: the one result type every attributor returns.

``values[q, n]`` is the attribution of training example ``n`` to query ``q``. Sign convention: a positive
value means training example ``n`` *raises* query ``q``'s measurement (``log Pr(completion | prompt)`` for
causal LMs); removing it would lower it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

SIGN = "positive = raises the query's log-probability"


@dataclass
class Scores:
    """Attribution scores of ``n_query`` queries against ``n_train`` training examples.

    values:     ``[n_query, n_train]`` float tensor; positive = the example raises the query's measurement.
    query_ids:  ``n_query`` identifiers of the queries.
    train_ids:  ``n_train`` identifiers of the training examples.
    method:     name of the attributor that produced the scores.
    units:      what one unit of a score means (e.g. "predicted change of log-prob when the example is removed").
    per_module: optional ``{module_name: [n_query, n_train]}``; sums to ``values`` over modules.
    per_token:  optional ``[n_query][n_train]`` list of ``[n_tokens]`` tensors over each training document's
                token positions; each sums to the corresponding entry of ``values``. The part at position ``t`` is
                what flows through the activations at ``t``, which predict token ``t + 1`` (and, through
                attention, later tokens): `by_predicted_token` labels parts by the token they predict.
    """

    values: torch.Tensor
    query_ids: list[Any]
    train_ids: list[Any]
    method: str = ""
    units: str = ""
    per_module: dict[str, torch.Tensor] | None = None
    per_token: list[list[torch.Tensor]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.ndim != 2:
            raise ValueError(f"Scores.values must be [n_query, n_train], got shape {tuple(self.values.shape)}")
        if self.values.shape != (len(self.query_ids), len(self.train_ids)):
            raise ValueError(
                f"Scores.values has shape {tuple(self.values.shape)} but there are "
                f"{len(self.query_ids)} query ids and {len(self.train_ids)} train ids"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)  # type: ignore[return-value]

    def top_k(self, query: int, k: int, *, largest: bool = True) -> list[tuple[Any, float]]:
        """The ``k`` training ids with the largest (or smallest) scores for query index ``query``."""
        k = min(k, self.values.shape[1])
        result = torch.topk(self.values[query], k, largest=largest)
        return [(self.train_ids[i], float(v)) for v, i in zip(result.values.tolist(), result.indices.tolist())]

    def select_train(self, indices: Sequence[int]) -> "Scores":
        """Scores restricted to the training columns ``indices`` (in that order)."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return Scores(
            values=self.values[:, index],
            query_ids=list(self.query_ids),
            train_ids=[self.train_ids[i] for i in index.tolist()],
            method=self.method,
            units=self.units,
            per_module=None if self.per_module is None else {k: v[:, index] for k, v in self.per_module.items()},
            per_token=None if self.per_token is None else [[row[i] for i in index.tolist()] for row in self.per_token],
            metadata=dict(self.metadata),
        )

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        """A JSON-serialisable summary: all values, or only each query's ``top_k``."""
        out: dict[str, Any] = {"method": self.method, "units": self.units, "sign": SIGN}
        if top_k is None:
            out.update(query_ids=self.query_ids, train_ids=self.train_ids, values=self.values.tolist())
        else:
            out["top"] = {
                str(qid): [{"train_id": tid, "score": s} for tid, s in self.top_k(q, top_k)]
                for q, qid in enumerate(self.query_ids)
            }
        return out

    def to_json(self, top_k: int | None = None) -> str:
        return json.dumps(self.to_dict(top_k), indent=2, default=str)

    def to_dataset(self) -> Any:
        """A `datasets.Dataset` with one row per (query, training example) pair, query-major (row
        ``q * n_train + n``): ``query_id``, ``train_id``, ``score`` (float64; positive = the example raises the
        query's measurement; NaN = not scored, e.g. outside a prefilter's candidates). Method, units and sign are in
        ``info.description`` (JSON)."""
        import datasets

        n_query, n_train = self.shape
        return datasets.Dataset.from_dict(
            {"query_id": [qid for qid in self.query_ids for _ in range(n_train)],
             "train_id": list(self.train_ids) * n_query,
             "score": _not_scored_as_nan(self.values).reshape(-1).tolist()},
            info=datasets.DatasetInfo(description=json.dumps(self._description())))

    def to_parquet(self, path: str | os.PathLike) -> None:
        """Write `to_dataset`'s rows as Parquet (atomically); method, units and sign go in the file's key-value
        metadata under ``llm_attrib``."""
        import pyarrow.parquet as pq

        from llm_attrib.store import atomic_path

        table = self.to_dataset().data.table
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"llm_attrib": json.dumps(self._description()).encode()})
        with atomic_path(path) as tmp:
            pq.write_table(table, str(tmp))

    def _description(self) -> dict[str, str]:
        return {"method": self.method, "units": self.units, "sign": SIGN}


def _not_scored_as_nan(values: torch.Tensor) -> torch.Tensor:
    """``values`` as float64 on the CPU with the prefilter's ``-inf`` ("not a candidate") as NaN, the missing value
    of tables (and ``null`` in JSON)."""
    values = values.detach().double().cpu()
    return torch.where(torch.isneginf(values), torch.full_like(values, float("nan")), values)


def by_predicted_token(parts: torch.Tensor) -> torch.Tensor:
    """A record's per-token parts ``[T]`` (by position) re-indexed by the token each one predicts, ``[T]``: entry
    ``t`` is the part through position ``t - 1``, whose activations predict token ``t``; entry 0 (a first token is
    predicted by no position) is 0. A causal LM's last position predicts nothing in the sequence, so its part is 0
    and nothing is lost: the entries still sum to the record's score."""
    return torch.cat([torch.zeros(1, dtype=parts.dtype, device=parts.device), parts[:-1]])


def sum_windows(scores: Scores, train: Sequence[Mapping[str, Any]]) -> Scores:
    """``scores`` of the records ``train`` of `llm_attrib.data.split_windows` summed over each record's windows:
    ``[n_query, n_records]``, records in their first window's order, ids the records' own (``record_id``); a record
    that was not split keeps its column. Per-module parts are summed alike; a record's per-token parts cover its whole
    document, each window's added from its start (overlaps add up), so they still sum to the record's score. The
    window scores themselves are ``scores``."""
    from llm_attrib.data import WINDOW

    columns: dict[Any, list[int]] = {}
    for index, record in enumerate(train):
        key = ("record", record["record_id"]) if WINDOW in record else ("column", index)
        columns.setdefault(key, []).append(index)
    groups = list(columns.values())
    ids = [train[group[0]]["record_id"] if WINDOW in train[group[0]] else scores.train_ids[group[0]]
           for group in groups]

    def summed(values: torch.Tensor) -> torch.Tensor:
        return torch.stack([values[:, group].sum(dim=1) for group in groups], dim=1)

    per_token = None
    if scores.per_token is not None:
        per_token = [[_document_parts(row, group, train) for group in groups] for row in scores.per_token]
    return Scores(values=summed(scores.values), query_ids=list(scores.query_ids), train_ids=ids,
                  method=scores.method, units=scores.units, per_token=per_token, metadata=dict(scores.metadata),
                  per_module=None if scores.per_module is None else {k: summed(v) for k, v in scores.per_module.items()})


def _document_parts(row: list[torch.Tensor], group: list[int], train: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """One record's per-token parts ``[n_tokens]`` from its windows' (``group``, columns of ``row``)."""
    from llm_attrib.data import WINDOW

    if len(group) == 1 and WINDOW not in train[group[0]]:
        return row[group[0]]
    parts = torch.zeros(max(train[i][WINDOW][1] for i in group), dtype=row[group[0]].dtype)
    for i in group:
        start, stop, _ = train[i][WINDOW]
        parts[start:stop] += row[i][: stop - start].to(parts.device)
    return parts
