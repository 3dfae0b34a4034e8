"""Lexical candidate selection before gradient work (Grosse et al. 2023, §3.2.1).

A TF-IDF (or BM25) index of the training corpus is fitted once and persisted as one safetensors file
(`Prefilter.save`; ``prefilter-<kind>.safetensors`` in a factors folder): the index's arrays as tensors, its
vocabulary and what it was made for (kind, options, columns, training data) as JSON metadata, checked before
anything is built from the file. Nothing is pickled. Per query only the top-``K`` training records by lexical
similarity are scored by the gradient attributor, so the gradient cost is that of the union of the candidates
instead of the whole corpus.

Scores of non-candidates are ``-inf`` (`NOT_A_CANDIDATE`): *not computed*, and ranked below every computed
score, so ``Scores.top_k`` and sorting keep working; use ``torch.isfinite`` to mask them before averaging.
Computed scores keep the attributor's sign: positive = the record raises the query's log-probability.
The prefilter is lexically biased — measure its recall of the full method's top-k (``eval/scale``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from llm_attrib.attributors.text import BM25Attributor, LexicalAttributor, TfidfAttributor
from llm_attrib.config import Config
from llm_attrib.data import Columns, record_ids
from llm_attrib.errors import UserInputError
from llm_attrib.scores import Scores
from llm_attrib.store import check_metadata, load_tensors, read_metadata, save_tensors

PREFILTERS: dict[str, type[LexicalAttributor]] = {"tfidf": TfidfAttributor, "bm25": BM25Attributor}
NOT_A_CANDIDATE = float("-inf")


def prefilter_file(kind: str) -> str:
    """The file name of a saved ``kind`` prefilter (``prefilter-bm25.safetensors``)."""
    return f"prefilter-{kind}.safetensors"


class Prefilter:
    """Top-``candidates`` training records per query by TF-IDF cosine or BM25 (see the module docstring).

    ``config`` is the index's options (`TfidfConfig`, `BM25Config`); ``columns`` says which record fields hold
    the text.
    """

    def __init__(self, kind: str = "tfidf", candidates: int = 100, columns: Columns = Columns(),
                 config: Config | None = None):
        if kind not in PREFILTERS:
            raise UserInputError(f"unknown prefilter {kind!r}; choose one of {sorted(PREFILTERS)}")
        if candidates < 1:
            raise UserInputError(f"candidates must be a positive integer, not {candidates}")
        self.kind, self.candidates, self.columns = kind, candidates, columns
        self.index: LexicalAttributor = PREFILTERS[kind](columns=columns, config=config)

    @property
    def is_fitted(self) -> bool:
        return self.index.is_fitted

    def fit(self, train: Sequence[Any]) -> "Prefilter":
        """Index the training texts (``[n_train]`` records)."""
        self.index.fit(train)
        return self

    def _made_for(self) -> dict[str, Any]:
        """What a saved index must have been made with to be loaded here (checked before its arrays are read)."""
        return {"kind": f"prefilter-{self.kind}", "config": self.index.config.to_dict(),
                "columns": dataclasses.asdict(self.columns)}

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted index (arrays + JSON metadata, with a checksum) to ``path``, atomically."""
        self.index._check_fitted()
        tensors, metadata = self.index._state()
        save_tensors(path, tensors, {**self._made_for(), "data": self.index._train_fingerprint, **metadata})

    def load(self, path: str | os.PathLike, train: Sequence[Any] | None = None) -> "Prefilter":
        """Load an index saved for ``train`` (if given); one made for other data, kind, options or columns is
        refused (`CacheMismatchError`) before anything is built from the file."""
        expect = self._made_for()
        if train is not None:
            expect["data"] = self.index._train_fingerprint_of(train)
        tensors, metadata = load_tensors(path, expect=expect)
        self.index._load_state(tensors, metadata)
        return self

    def fit_or_load(self, path: str | os.PathLike | None, train: Sequence[Any]) -> "Prefilter":
        """Load the index at ``path`` if it is there, else fit it (and save it there)."""
        if path is not None and Path(path).exists():
            return self.load(path, train)
        self.fit(train)
        if path is not None:
            self.save(path)
        return self

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Save the index into ``directory`` as `prefilter_file` (`from_pretrained` reloads it)."""
        self.save(Path(directory) / prefilter_file(self.kind))
        return Path(directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, kind: str | None = None, candidates: int = 100,
                        columns: Columns = Columns()) -> "Prefilter":
        """The prefilter saved in ``directory`` with its saved options (``kind`` picks one where several kinds are
        saved there); refused if it was saved for other ``columns``."""
        directory = Path(directory)
        kinds = [kind] if kind is not None else [k for k in PREFILTERS if (directory / prefilter_file(k)).exists()]
        if len(kinds) > 1:
            raise UserInputError(f"{directory} holds prefilters of kinds {kinds}: say which with kind=")
        if not kinds or not (directory / prefilter_file(kinds[0])).exists():
            raise UserInputError(f"{directory} holds no saved {kind or 'tfidf or bm25'} prefilter; "
                                 "write one with save_pretrained")
        path = directory / prefilter_file(kinds[0])
        saved = read_metadata(path)
        check_metadata(path, saved, {"kind": f"prefilter-{kinds[0]}"})
        config = PREFILTERS[kinds[0]].config_class.from_dict(saved.get("config") or {}, where=f"{path} config")
        return cls(kinds[0], candidates, columns, config).load(path)

    def select(self, queries: Sequence[Any]) -> torch.Tensor:
        """``[n_query, min(K, n_train)]`` training indices, lexically most similar first."""
        return self.index.top_k_candidates(queries, self.candidates)

    def score(self, attributor: Any, queries: Sequence[Any], train: Sequence[Any], **options: Any) -> Scores:
        """``[n_query, n_train]`` scores of ``attributor`` on each query's candidates, ``-inf`` elsewhere.

        The attributor scores the union of all queries' candidates once (``options`` go to its ``score``);
        per-module parts are ``-inf`` and per-token parts empty outside a query's candidates.
        """
        self.index._check_same_train(train)
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
