"""Lexical candidate selection before gradient work (Grosse et al. 2023, §3.2.1).

A TF-IDF (or BM25) index of the training corpus is fitted once and persisted as one safetensors file
(`Prefilter.save`; ``prefilter-<kind>.safetensors`` in a factors folder): the index's arrays as tensors, its
vocabulary and what it was made for (kind, options, columns, training data) as JSON metadata, checked before
anything is built from the file. Nothing is pickled. Per query only the top-``K`` training records by lexical
similarity are scored by the gradient attributor. Queries are scored in groups of at most ``query_chunk``
(`group_queries`: a query joins the group whose members share most of its candidates), and each group scores
only the union of its own queries' candidates, so the training gradients of candidates shared within a group are
computed once, the work is about ``n_query × K`` (not the union of every query's candidates, which tends to the
whole corpus as queries grow), and memory stays that of one group. ``query_chunk ≥ n_query`` scores the union of
all candidates in one pass.

Scores of non-candidates are ``-inf`` (`NOT_A_CANDIDATE`): *not computed*, and ranked below every computed
score, so ``Scores.top_k`` and sorting keep working; use ``torch.isfinite`` to mask them before averaging.
Computed scores keep the attributor's sign: positive = the record raises the query's log-probability.
The prefilter is lexically biased — measure its recall of the full method's top-k (``eval/scale``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from llm_attrib.attributors.base import STATE_FILE, Attributor, make_config, read_config
from llm_attrib.attributors.text import BM25Attributor, LexicalAttributor, TfidfAttributor
from llm_attrib.config import Config, at_least, option
from llm_attrib.data import Columns, record_ids
from llm_attrib.errors import UserInputError
from llm_attrib.scores import Scores
from llm_attrib.store import load_tensors, read_metadata, save_tensors

PREFILTERS: dict[str, type[LexicalAttributor]] = {"tfidf": TfidfAttributor, "bm25": BM25Attributor}
NOT_A_CANDIDATE = float("-inf")
INNER = "attributor"
"""The folder of a saved prefilter that holds the attributor it narrows."""


def prefilter_file(index: str) -> str:
    """The file name of a saved ``index`` prefilter's lexical index (``prefilter-bm25.safetensors``)."""
    return f"prefilter-{index}.safetensors"


@dataclass(frozen=True)
class PrefilterConfig(Config):
    """Options of `Prefilter`."""

    index: str = option("tfidf", "lexical index that picks the candidates (on the command line: --prefilter)",
                        choices=tuple(PREFILTERS), flag=False)
    candidates: int = option(100, "training records kept per query (the others are not scored)", check=at_least(1))
    query_chunk: int = option(16, "queries scored together: a group scores only the union of its queries' "
                                  "candidates (shared ones once)", check=at_least(1))


class Prefilter(Attributor):
    """``attributor``'s scores on each query's top-``candidates`` training records by TF-IDF cosine or BM25, ``-inf``
    elsewhere (see the module docstring).

    Args:
        attributor: the gradient attributor whose work the prefilter narrows (None: an index only, to `select`
            candidates or to wrap an attributor later with `around`).
        config: a `PrefilterConfig`; keyword ``options`` are its fields (``index="bm25", candidates=50``).
        columns: which record fields hold the text.
        index_config: the index's own options (`TfidfConfig`, `BM25Config`).
    """

    kind = "prefilter"
    config_class = PrefilterConfig
    config: PrefilterConfig

    def __init__(self, attributor: Attributor | None = None, *, config: PrefilterConfig | None = None,
                 columns: Columns = Columns(), index_config: Config | None = None, **options: Any):
        self.config = make_config(self.config_class, config, options)
        self.attributor = attributor
        self.columns = columns
        self.index: LexicalAttributor = PREFILTERS[self.config.index](columns=columns, config=index_config)

    @property
    def name(self) -> str:
        inner = "" if self.attributor is None else f"{self.attributor.name}+"
        return f"{inner}{self.config.index}-prefilter"

    @property
    def units(self) -> str:
        inner = self.index.units if self.attributor is None else self.attributor.units
        return f"{inner}; -inf = not a candidate"

    @property
    def is_fitted(self) -> bool:
        return self.index.is_fitted and (self.attributor is None or self.attributor.is_fitted)

    def around(self, attributor: Attributor) -> "Prefilter":
        """This prefilter (options, columns and fitted index shared) narrowing ``attributor``."""
        wrapped = type(self)(attributor, config=self.config, columns=self.columns, index_config=self.index.config)
        wrapped.index = self.index
        return wrapped

    def fit(self, train: Sequence[Any]) -> "Prefilter":
        """Index the training texts (``[n_train]`` records) unless the index was fitted or loaded for exactly these,
        and fit the attributor unless it is fitted."""
        if not self.index.is_fitted or self.index._train_fingerprint != self.index._train_fingerprint_of(train):
            self.index.fit(train)
        if self.attributor is not None and not self.attributor.is_fitted:
            self.attributor.fit(train)
        return self

    def self_influence(self, train: Sequence[Any]) -> torch.Tensor:
        """The attributor's self-influence (candidates are chosen per query; a record is its own candidate)."""
        return self._inner().self_influence(train)

    def _inner(self) -> Attributor:
        if self.attributor is None:
            raise UserInputError("this prefilter narrows no attributor: build Prefilter(attributor, ...) or use "
                                 "prefilter.around(attributor)")
        return self.attributor

    # ------------------------------------------------------------------------------------- persistence
    def _made_for(self) -> dict[str, Any]:
        """What a saved index must have been made with to be loaded here (checked before its arrays are read)."""
        return {"kind": f"prefilter-{self.config.index}", "config": self.index.config.to_dict(),
                "columns": dataclasses.asdict(self.columns)}

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        self.index._check_fitted()
        tensors, metadata = self.index._state()
        return tensors, {**self._made_for(), "data": self.index._train_fingerprint, **metadata}

    def _load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        self.index._load_state(tensors, metadata)

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted index (arrays + JSON metadata, with a checksum) to ``path``, atomically."""
        save_tensors(path, *self._state())

    def load(self, path: str | os.PathLike, train: Sequence[Any] | None = None) -> "Prefilter":
        """Load an index saved for ``train`` (if given); one made for other data, kind, options or columns is
        refused (`CacheMismatchError`) before anything is built from the file."""
        expect = self._made_for()
        if train is not None:
            expect["data"] = self.index._train_fingerprint_of(train)
        self._load_state(*load_tensors(path, expect=expect))
        return self

    def fit_or_load(self, path: str | os.PathLike | None, train: Sequence[Any]) -> "Prefilter":
        """Load the index at ``path`` if it is there, else fit it (and save it there); then `fit` the rest."""
        if path is not None and Path(path).exists():
            self.load(path, train)
        else:
            self.fit(train)
            if path is not None:
                self.save(path)
        return self.fit(train)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """The index as `prefilter_file` beside the config, and the attributor it narrows in ``attributor/``."""
        directory = Path(directory)
        if self.attributor is not None:
            self.attributor.save_pretrained(directory / INNER)
        return super().save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *args: Any, columns: Columns = Columns(),
                        **runtime: Any) -> "Prefilter":
        """The prefilter saved in ``directory``; ``args`` are what its attributor is built on (its adapter…), the
        attributor being loaded from ``attributor/`` when one was saved. Refused for other ``columns``."""
        from llm_attrib.attributors import load_attributor

        directory = Path(directory)
        saved = read_config(directory)
        inner = load_attributor(directory / INNER, *args, **runtime) if (directory / INNER).exists() else None
        config = cls.config_class.from_dict(saved["config"], where=str(directory))
        metadata = read_metadata(directory / STATE_FILE)
        index_config = PREFILTERS[config.index].config_class.from_dict(metadata.get("config") or {},
                                                                       where=f"{directory} index config")
        prefilter = cls(inner, config=config, columns=columns, index_config=index_config)
        prefilter._load_state(*load_tensors(directory / STATE_FILE, expect=prefilter._made_for()))
        return prefilter

    def select(self, queries: Sequence[Any]) -> torch.Tensor:
        """``[n_query, min(K, n_train)]`` training indices, lexically most similar first."""
        return self.index.top_k_candidates(queries, self.config.candidates)

    def score(self, queries: Sequence[Any], train: Sequence[Any], **options: Any) -> Scores:
        """``[n_query, n_train]`` scores of the attributor on each query's candidates, ``-inf`` elsewhere
        (``options`` go to its ``score``); per-module parts are ``-inf`` and per-token parts empty outside a query's
        candidates."""
        return self.score_candidates(queries, train, self.select(queries), **options)

    def score_candidates(self, queries: Sequence[Any], train: Sequence[Any], chosen: torch.Tensor,
                         **options: Any) -> Scores:
        """`score` on given candidates: ``chosen[q]`` (``[n_query, K]`` training indices) are query ``q``'s.

        Queries are scored in `group_queries` groups, each against the union of its queries' candidates; a pair
        ``(q, n)`` gets the score full scoring gives (up to floating-point summation order) wherever a pair's score
        does not depend on which other records are scored (not so with ``rescore_top``, which re-scores the best of
        those scored). ``metadata["n_scored"]`` is the training records scored, summed over groups.
        """
        attributor = self._inner()
        self.index._check_same_train(train)
        n_query, n_train = len(queries), len(train)
        mask = torch.zeros(n_query, n_train, dtype=torch.bool)
        mask.scatter_(1, chosen, True)
        values = torch.full((n_query, n_train), NOT_A_CANDIDATE, dtype=torch.float64)
        per_module: dict[str, torch.Tensor] | None = None
        per_token: list[list[torch.Tensor]] | None = None
        inner: Scores | None = None
        n_scored = 0
        for group in group_queries(chosen, self.config.query_chunk):
            union = sorted(set(chosen[group].flatten().tolist()))
            n_scored += len(union)
            inner = attributor.score([queries[q] for q in group], [train[n] for n in union], **options)
            keep = mask[group][:, union]
            rows, columns = torch.tensor(group)[:, None], torch.tensor(union)[None, :]

            def put(full: torch.Tensor, block: torch.Tensor) -> None:
                full[rows, columns] = torch.where(keep, block.to(full.dtype), full[rows, columns])

            put(values, inner.values)
            if inner.per_module is not None:
                if per_module is None:
                    per_module = {k: torch.full_like(values, NOT_A_CANDIDATE) for k in inner.per_module}
                for k, block in inner.per_module.items():
                    put(per_module[k], block)
            if inner.per_token is not None:
                if per_token is None:
                    per_token = [[torch.zeros(0)] * n_train for _ in range(n_query)]
                for row, q in enumerate(group):
                    for column, n in enumerate(union):
                        if mask[q, n]:
                            per_token[q][n] = inner.per_token[row][column]
        assert inner is not None
        return Scores(
            values=values.to(inner.values.dtype), query_ids=record_ids(queries), train_ids=record_ids(train),
            method=f"{inner.method}+{self.config.index}-prefilter", units=f"{inner.units}; -inf = not a candidate",
            per_module=None if per_module is None else {k: v.to(inner.values.dtype) for k, v in per_module.items()},
            per_token=per_token,
            metadata={**inner.metadata, "prefilter": self.config.index, "candidates": self.config.candidates,
                      "query_chunk": self.config.query_chunk, "n_scored": n_scored},
        )


def group_queries(chosen: torch.Tensor, size: int) -> list[list[int]]:
    """Queries (rows of ``chosen``, ``[n_query, K]`` candidate indices) in groups of at most ``size``: the first
    query not yet grouped starts a group, which then takes, one at a time, the ungrouped query sharing the most
    candidates with its members (counted per member; ties to the earliest). ``O(n_query²)`` index work."""
    n_query = chosen.shape[0]
    if size >= n_query:
        return [list(range(n_query))]
    membership = sp.csr_matrix((np.ones(chosen.numel()), chosen.flatten().numpy(),
                                np.arange(0, chosen.numel() + 1, chosen.shape[1])),
                               shape=(n_query, int(chosen.max()) + 1))
    overlap = (membership @ membership.T).tocsr()  # [n_query, n_query] shared candidates
    grouped = np.zeros(n_query, dtype=bool)
    groups: list[list[int]] = []
    for first in range(n_query):
        if grouped[first]:
            continue
        group, grouped[first] = [first], True
        shared = overlap[first].toarray()[0]
        while len(group) < size and not grouped.all():
            best = int(np.argmax(np.where(grouped, -1.0, shared)))
            group.append(best)
            grouped[best] = True
            shared += overlap[best].toarray()[0]
        groups.append(group)
    return groups
