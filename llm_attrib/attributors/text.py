"""Lexical baselines with the attributor interface: random, TF-IDF cosine, BM25 Okapi.

``fit(train_records)`` indexes the training texts; ``score(query_records, train_records) -> Scores`` gives
``[n_query, n_train]`` similarities; ``top_k_candidates(query_records, k)`` gives each query's best training
indices (the shape a TF-IDF/BM25 prefilter needs).

A record's text is ``prompt + " " + completion`` for prompt/completion records and ``text`` for documents.
Sign: these baselines *assume* that lexical similarity means influence: a higher score is read as "raises the
query's log-probability more". They measure no model, so the scale has no unit.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from abc import ABC, abstractmethod

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from llm_attrib.data import Columns, record_ids, record_text
from llm_attrib.errors import UserInputError
from llm_attrib.scores import Scores
from llm_attrib.store import data_fingerprint

Record = Mapping[str, Any]


class TextAttributor(ABC):
    """Base of the text baselines: an index of the training texts and a query-vs-index similarity.

    Subclasses implement ``_index(texts)`` (called by `fit`) and ``_similarity(texts) -> [n_query, n_train]``.
    """

    method = "lexical"
    units = "lexical similarity (no model involved; higher = assumed to raise the query's log-probability)"

    def __init__(self, columns: Columns = Columns()) -> None:
        self.columns = columns
        self._train_fingerprint: str | None = None
        self._train_ids: list[Any] = []

    def fit(self, train_records: Sequence[Record]) -> "TextAttributor":
        texts = [record_text(r, self.columns) for r in train_records]
        self._index(texts)
        self._train_fingerprint = data_fingerprint(texts)
        self._train_ids = record_ids(train_records)
        return self

    def _check_fitted(self, train_records: Sequence[Record] | None) -> None:
        if self._train_fingerprint is None:
            raise UserInputError(f"{type(self).__name__}: call fit(train_records) before scoring")
        if train_records is not None and data_fingerprint([record_text(r, self.columns) for r in train_records]) != self._train_fingerprint:
            raise UserInputError(f"{type(self).__name__}: scoring against other training records than were fitted; fit again")

    def score(self, query_records: Sequence[Record], train_records: Sequence[Record] | None = None) -> Scores:
        """``[n_query, n_train]`` similarities of each query to each fitted training record (higher = more similar)."""
        if self._train_fingerprint is None and train_records is not None:
            self.fit(train_records)
        self._check_fitted(train_records)
        values = self._similarity([record_text(r, self.columns) for r in query_records])
        return Scores(
            values=torch.as_tensor(np.asarray(values, dtype=np.float32)),
            query_ids=record_ids(query_records),
            train_ids=list(self._train_ids),
            method=self.method,
            units=self.units,
        )

    def top_k_candidates(self, query_records: Sequence[Record], k: int) -> torch.Tensor:
        """``[n_query, min(k, n_train)]`` training indices, most similar first."""
        values = self.score(query_records).values
        return torch.topk(values, min(k, values.shape[1]), dim=1).indices

    @abstractmethod
    def _index(self, texts: list[str]) -> None:
        """Build the index of the training texts."""

    @abstractmethod
    def _similarity(self, texts: list[str]) -> np.ndarray:
        """``[n_query, n_train]`` similarity of each query text to each indexed training text."""


class RandomAttributor(TextAttributor):
    """Standard-normal scores from a seeded generator: the floor every method must beat."""

    method = "random"
    units = "none (random)"

    def __init__(self, seed: int = 0, columns: Columns = Columns()) -> None:
        super().__init__(columns)
        self.seed = seed
        self._n_train = 0

    def _index(self, texts: list[str]) -> None:
        self._n_train = len(texts)

    def _similarity(self, texts: list[str]) -> np.ndarray:
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randn(len(texts), self._n_train, generator=generator).numpy()


class TfidfAttributor(TextAttributor):
    """Cosine similarity of TF-IDF vectors (scikit-learn `TfidfVectorizer`, l2-normalised rows, sparse)."""

    method = "tfidf"

    def __init__(self, columns: Columns = Columns(), **vectorizer_options: Any) -> None:
        super().__init__(columns)
        self.vectorizer = TfidfVectorizer(**vectorizer_options)
        self._matrix: sp.csr_matrix | None = None

    def _index(self, texts: list[str]) -> None:
        self._matrix = self.vectorizer.fit_transform(texts).tocsr()

    def _similarity(self, texts: list[str]) -> np.ndarray:
        return (self.vectorizer.transform(texts) @ self._matrix.T).toarray()


class BM25Attributor(TextAttributor):
    """BM25 Okapi: ``Σ_{t ∈ query} idf(t) · tf(t,d)·(k1+1) / (tf(t,d) + k1·(1 - b + b·|d|/avgdl))``.

    Query terms count with their multiplicity. ``idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))`` (never
    negative). ``|d|`` is the document's token count under the vectorizer's tokenisation.
    """

    method = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, columns: Columns = Columns(), **vectorizer_options: Any) -> None:
        super().__init__(columns)
        self.k1, self.b = k1, b
        self.vectorizer = CountVectorizer(**vectorizer_options)
        self._weights: sp.csr_matrix | None = None

    def _index(self, texts: list[str]) -> None:
        counts = self.vectorizer.fit_transform(texts).tocsr().astype(np.float64)
        n_docs = counts.shape[0]
        doc_freq = np.bincount(counts.indices, minlength=counts.shape[1])
        idf = np.log1p((n_docs - doc_freq + 0.5) / (doc_freq + 0.5))
        lengths = np.asarray(counts.sum(axis=1)).ravel()
        norm = self.k1 * (1.0 - self.b + self.b * lengths / max(lengths.mean(), 1e-12))
        tf = counts.data
        row_of_entry = np.repeat(np.arange(n_docs), np.diff(counts.indptr))
        weights = counts.copy()
        weights.data = idf[counts.indices] * tf * (self.k1 + 1.0) / (tf + norm[row_of_entry])
        self._weights = weights

    def _similarity(self, texts: list[str]) -> np.ndarray:
        return (self.vectorizer.transform(texts).astype(np.float64) @ self._weights.T).toarray()
