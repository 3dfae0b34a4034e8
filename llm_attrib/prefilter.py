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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

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
        self.config = make_config(PrefilterConfig, config, options)
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
        wrapped = Prefilter(attributor, config=self.config, columns=self.columns, index_config=self.index.config)
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
        config = PrefilterConfig.from_dict(saved["config"], where=str(directory))
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
        """``[n_query, n_train]`` scores of the attributor on each query's candidates, ``-inf`` elsewhere.

        The attributor scores the union of all queries' candidates once (``options`` go to its ``score``);
        per-module parts are ``-inf`` and per-token parts empty outside a query's candidates.
        """
        attributor = self._inner()
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
            method=f"{inner.method}+{self.config.index}-prefilter", units=f"{inner.units}; -inf = not a candidate",
            per_module=None if inner.per_module is None else {k: spread(v) for k, v in inner.per_module.items()},
            per_token=per_token,
            metadata={**inner.metadata, "prefilter": self.config.index, "candidates": self.config.candidates,
                      "n_scored": len(union)},
        )
