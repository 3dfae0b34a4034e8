"""Lexical candidate selection before gradient work (Grosse et al. 2023, §3.2.1).

A TF-IDF (or BM25) index of the training corpus is fitted once (and persisted with `Prefilter.save`); per
query only the top-``K`` training records by lexical similarity are scored by the gradient attributor, so
the gradient cost is that of the union of the candidates instead of the whole corpus.

Scores of non-candidates are ``-inf`` (`NOT_A_CANDIDATE`): *not computed*, and ranked below every computed
score, so ``Scores.top_k`` and sorting keep working; use ``torch.isfinite`` to mask them before averaging.
Computed scores keep the attributor's sign: positive = the record raises the query's log-probability.
The prefilter is lexically biased — measure its recall of the full method's top-k (``eval/scale``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Sequence

import torch

from llm_attrib import __version__
from llm_attrib.attributors.text import BM25Attributor, TextAttributor, TfidfAttributor
from llm_attrib.data import Columns, record_ids, record_text
from llm_attrib.errors import CacheMismatchError, UserInputError
from llm_attrib.scores import Scores
from llm_attrib.store import atomic_path, data_fingerprint

PREFILTERS: dict[str, type[TextAttributor]] = {"tfidf": TfidfAttributor, "bm25": BM25Attributor}
NOT_A_CANDIDATE = float("-inf")


class Prefilter:
    """Top-``candidates`` training records per query by TF-IDF cosine or BM25 (see the module docstring)."""

    def __init__(self, kind: str = "tfidf", candidates: int = 100, columns: Columns = Columns()):
        if kind not in PREFILTERS:
            raise UserInputError(f"unknown prefilter {kind!r}; choose one of {sorted(PREFILTERS)}")
        if candidates < 1:
            raise UserInputError(f"candidates must be a positive integer, not {candidates}")
        self.kind, self.candidates, self.columns = kind, candidates, columns
        self.index: TextAttributor = PREFILTERS[kind](columns=columns)
        self.fingerprint: str | None = None

    def _fingerprint(self, train: Sequence[Any]) -> str:
        return data_fingerprint([record_text(r, self.columns) for r in train])

    def fit(self, train: Sequence[Any]) -> "Prefilter":
        """Index the training texts (``[n_train]`` records)."""
        if len(train) == 0:
            raise UserInputError("the training set is empty")
        self.index.fit(train)
        self.fingerprint = self._fingerprint(train)
        return self

    def metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "data": self.fingerprint, "columns": repr(self.columns),
                "library_version": __version__}

    def save(self, path: str | Path) -> None:
        """Pickle the fitted index (vectorizer + sparse matrix) with its metadata, atomically."""
        if self.fingerprint is None:
            raise UserInputError("fit the prefilter before saving it")
        with atomic_path(path) as tmp:
            tmp.write_bytes(pickle.dumps({"metadata": self.metadata(), "index": self.index}))

    def load(self, path: str | Path, train: Sequence[Any]) -> "Prefilter":
        """Load an index saved for ``train``; one made for other data, kind or version is refused."""
        saved = pickle.loads(Path(path).read_bytes())
        self.fingerprint = self._fingerprint(train)
        for key, value in self.metadata().items():
            if saved["metadata"].get(key) != value:
                raise CacheMismatchError(f"{path} was made with {key}={saved['metadata'].get(key)!r}, not {value!r}: "
                                         "delete it or point to an index made for this data")
        self.index = saved["index"]
        return self

    def fit_or_load(self, path: str | Path | None, train: Sequence[Any]) -> "Prefilter":
        """Load the index at ``path`` if it is there, else fit it (and save it there)."""
        if path is not None and Path(path).exists():
            return self.load(path, train)
        self.fit(train)
        if path is not None:
            self.save(path)
        return self

    def select(self, queries: Sequence[Any]) -> torch.Tensor:
        """``[n_query, min(K, n_train)]`` training indices, lexically most similar first."""
        if self.fingerprint is None:
            raise UserInputError("call fit(train) (or load) before selecting candidates")
        return self.index.top_k_candidates(queries, self.candidates)

    def score(self, attributor: Any, queries: Sequence[Any], train: Sequence[Any], **options: Any) -> Scores:
        """``[n_query, n_train]`` scores of ``attributor`` on each query's candidates, ``-inf`` elsewhere.

        The attributor scores the union of all queries' candidates once (``options`` go to its ``score``);
        per-module parts are ``-inf`` and per-token parts empty outside a query's candidates.
        """
        if self._fingerprint(train) != self.fingerprint:
            raise UserInputError("the prefilter was fitted on other training records; fit it on these")
        chosen = self.select(queries)
        union = sorted(set(chosen.flatten().tolist()))
        position = {column: i for i, column in enumerate(union)}
        inner = attributor.score(queries, [train[i] for i in union], **options)
        mask = torch.zeros(len(queries), len(train), dtype=torch.bool)
        mask.scatter_(1, chosen, True)
        keep = mask[:, union]

        def spread(block: torch.Tensor) -> torch.Tensor:
            full = torch.full((len(queries), len(train)), NOT_A_CANDIDATE, dtype=block.dtype)
            full[:, union] = torch.where(keep, block, torch.full_like(block, NOT_A_CANDIDATE))
            return full

        per_token = None
        if inner.per_token is not None:
            per_token = [[row[position[n]] if mask[q, n] else torch.zeros(0) for n in range(len(train))]
                         for q, row in enumerate(inner.per_token)]
        return Scores(
            values=spread(inner.values), query_ids=inner.query_ids, train_ids=record_ids(train),
            method=f"{inner.method}+{self.kind}-prefilter", units=f"{inner.units}; -inf = not a candidate",
            per_module=None if inner.per_module is None else {k: spread(v) for k, v in inner.per_module.items()},
            per_token=per_token,
            metadata={**inner.metadata, "prefilter": self.kind, "candidates": self.candidates,
                      "n_scored": len(union)},
        )
