"""Lexical baselines on the attributor contract: random, TF-IDF cosine, BM25 Okapi.

``fit(train_records)`` indexes the training texts; ``score(query_records, train_records) -> Scores`` gives
``[n_query, n_train]`` similarities; ``top_k_candidates(query_records, k)`` gives each query's best training
indices (the shape a TF-IDF/BM25 prefilter needs). ``save_pretrained`` writes the index as plain arrays — the
vocabulary as JSON metadata, idf and the sparse ``[n_train, n_terms]`` matrix (data, indices, indptr) as tensors —
and ``from_pretrained`` scores bitwise equal without refitting. Nothing is pickled.

A record's text is ``prompt + " " + completion`` for prompt/completion records and ``text`` for documents.
Sign: these baselines *assume* that lexical similarity means influence: a higher score is read as "raises the
query's log-probability more". They measure no model, so the scale has no unit.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import normalize

from llm_attrib.attributors.base import Attributor, make_config
from llm_attrib.config import Config, at_least, option
from llm_attrib.data import Columns, record_ids, record_text
from llm_attrib.errors import UserInputError
from llm_attrib.scores import Scores
from llm_attrib.store import data_fingerprint

Record = Mapping[str, Any]


@dataclass(frozen=True)
class RandomConfig(Config):
    """Options of `RandomAttributor`."""

    flag_prefix = "random-"
    seed: int = option(0, "seed of the random scores")


@dataclass(frozen=True)
class TfidfConfig(Config):
    """`TfidfAttributor` has no options: scikit-learn's default tokenisation (lowercased words of ≥ 2
    characters), smoothed idf ``ln((1 + N) / (1 + df)) + 1``, l2-normalised rows."""


@dataclass(frozen=True)
class BM25Config(Config):
    """Options of `BM25Attributor`."""

    flag_prefix = "bm25-"
    k1: float = option(1.5, "BM25 term-frequency saturation", check=at_least(0))
    b: float = option(0.75, "BM25 document-length normalisation (0 = none, 1 = full)",
                      check=lambda value: None if 0 <= value <= 1 else "between 0 and 1")


class TextAttributor(Attributor):
    """Base of the text baselines: an index of the training texts and a query-vs-index similarity.

    Subclasses implement ``_index(texts)`` (called by `fit`), ``_similarity(texts) -> [n_query, n_train]`` and
    the index's persisted form, ``_index_state()`` / ``_load_index(tensors, metadata)``. ``columns`` says which
    record fields hold the text; it is a runtime argument, recorded in the saved state and checked on load.
    """

    units = "lexical similarity (no model involved; higher = assumed to raise the query's log-probability)"

    def __init__(self, columns: Columns = Columns(), config: Config | None = None, **options: Any) -> None:
        self.config = make_config(self.config_class, config, options)
        self.columns = columns
        self._train_fingerprint: str | None = None
        self._train_ids: list[Any] = []

    @property
    def name(self) -> str:
        return self.kind

    @property
    def is_fitted(self) -> bool:
        return self._train_fingerprint is not None

    def _texts(self, records: Iterable[Record]) -> list[str]:
        return [record_text(r, self.columns) for r in records]

    def _train_fingerprint_of(self, train: Iterable[Any]) -> str:
        return data_fingerprint(self._texts(train))

    def fit(self, train: Sequence[Record]) -> "TextAttributor":
        """Index the ``[n_train]`` training texts."""
        if len(train) == 0:
            raise UserInputError("the training set is empty")
        self._index(self._texts(train))
        self._remember_train(train)
        return self

    def score(self, queries: Sequence[Record], train: Iterable[Record] | None = None) -> Scores:
        """``[n_query, n_train]`` similarities to the fitted training records (higher = more similar); ``train``,
        if given, must be those records."""
        self._check_same_train(train)
        values = self._similarity(self._texts(queries))
        return Scores(values=torch.as_tensor(np.asarray(values, dtype=np.float32)), query_ids=record_ids(queries),
                      train_ids=list(self._train_ids), method=self.name, units=self.units)

    def top_k_candidates(self, queries: Sequence[Record], k: int) -> torch.Tensor:
        """``[n_query, min(k, n_train)]`` training indices, most similar first."""
        values = self.score(queries).values
        return torch.topk(values, min(k, values.shape[1]), dim=1).indices

    # ------------------------------------------------------------------------------------- persistence
    def _bound_to(self) -> dict[str, Any]:
        return {"columns": dataclasses.asdict(self.columns)}

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, metadata = self._index_state()
        return tensors, {**metadata, **self._train_metadata()}

    def _load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        self._load_index(tensors, metadata)
        self._restore_train(metadata)

    @abstractmethod
    def _index(self, texts: list[str]) -> None:
        """Build the index of the training texts."""

    @abstractmethod
    def _similarity(self, texts: list[str]) -> np.ndarray:
        """``[n_query, n_train]`` similarity of each query text to each indexed training text."""

    @abstractmethod
    def _index_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The index as tensors and JSON metadata."""

    @abstractmethod
    def _load_index(self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
        """Restore what `_index_state` returned."""


class RandomAttributor(TextAttributor):
    """Standard-normal scores from a seeded generator: the floor every method must beat."""

    kind = "random"
    config_class = RandomConfig
    config: RandomConfig
    units = "none (random)"

    def _index(self, texts: list[str]) -> None:
        pass  # nothing but the number of training records, which `fit` remembers

    def _similarity(self, texts: list[str]) -> np.ndarray:
        generator = torch.Generator().manual_seed(self.config.seed)
        return torch.randn(len(texts), len(self._train_ids), generator=generator).numpy()

    def _index_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {}

    def _load_index(self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
        pass


class LexicalAttributor(TextAttributor):
    """A sparse term-weight index ``[n_train, n_terms]`` over a vocabulary, queried by ``query_vectors @ indexᵀ``.

    Words are counted by scikit-learn's `CountVectorizer` (lowercased, words of ≥ 2 characters) over the fitted
    vocabulary; subclasses weight the training counts (``_weight_index``) and the query counts (``_weight_queries``).
    """

    def __init__(self, columns: Columns = Columns(), config: Config | None = None, **options: Any) -> None:
        super().__init__(columns, config, **options)
        self._counter: CountVectorizer | None = None
        self._matrix: sp.csr_matrix | None = None

    def _index(self, texts: list[str]) -> None:
        counter = CountVectorizer()
        try:
            counts = counter.fit_transform(texts).tocsr().astype(np.float64)
        except ValueError:  # scikit-learn's "empty vocabulary"
            raise UserInputError(f"{self.name}: the training texts hold no word of two or more letters or digits "
                                 "to index") from None
        self._counter = CountVectorizer(vocabulary=list(counter.get_feature_names_out()))
        self._matrix = self._weight_index(counts)

    def _similarity(self, texts: list[str]) -> np.ndarray:
        counts = self._counter.transform(texts).tocsr().astype(np.float64)
        return (self._weight_queries(counts) @ self._matrix.T).toarray()

    @abstractmethod
    def _weight_index(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """``[n_train, n_terms]`` index weights from the training term counts (fits what the weighting needs)."""

    @abstractmethod
    def _weight_queries(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """``[n_query, n_terms]`` query vectors from the query term counts."""

    def _index_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        matrix = self._matrix
        tensors = {"index/data": matrix.data, "index/indices": matrix.indices.astype(np.int64),
                   "index/indptr": matrix.indptr.astype(np.int64)}
        return ({name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in tensors.items()},
                {"vocabulary": list(self._counter.vocabulary), "index_shape": list(matrix.shape)})

    def _load_index(self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
        arrays = [tensors[f"index/{name}"].numpy() for name in ("data", "indices", "indptr")]
        self._matrix = sp.csr_matrix(tuple(arrays), shape=tuple(metadata["index_shape"]))
        self._counter = CountVectorizer(vocabulary=list(metadata["vocabulary"]))


class TfidfAttributor(LexicalAttributor):
    """Cosine similarity of TF-IDF vectors: raw counts × smoothed idf ``ln((1 + N) / (1 + df)) + 1``, rows
    l2-normalised (scikit-learn's `TfidfVectorizer` defaults), sparse."""

    kind = "tfidf"
    config_class = TfidfConfig
    config: TfidfConfig

    def __init__(self, columns: Columns = Columns(), config: TfidfConfig | None = None, **options: Any) -> None:
        super().__init__(columns, config, **options)
        self._idf: np.ndarray | None = None

    def _weight_index(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        doc_freq = np.bincount(counts.indices, minlength=counts.shape[1])
        self._idf = np.log((1.0 + counts.shape[0]) / (1.0 + doc_freq)) + 1.0
        return self._weight_queries(counts)

    def _weight_queries(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        return normalize(counts @ sp.diags(self._idf), norm="l2").tocsr()

    def _index_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, metadata = super()._index_state()
        return {**tensors, "idf": torch.from_numpy(self._idf)}, metadata

    def _load_index(self, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
        super()._load_index(tensors, metadata)
        self._idf = tensors["idf"].numpy()


class BM25Attributor(LexicalAttributor):
    """BM25 Okapi: ``Σ_{t ∈ query} idf(t) · tf(t,d)·(k1+1) / (tf(t,d) + k1·(1 - b + b·|d|/avgdl))``.

    Query terms count with their multiplicity. ``idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))`` (never
    negative). ``|d|`` is the document's token count under the vectorizer's tokenisation.
    """

    kind = "bm25"
    config_class = BM25Config
    config: BM25Config

    def _weight_index(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        k1, b = self.config.k1, self.config.b
        n_docs = counts.shape[0]
        doc_freq = np.bincount(counts.indices, minlength=counts.shape[1])
        idf = np.log1p((n_docs - doc_freq + 0.5) / (doc_freq + 0.5))
        lengths = np.asarray(counts.sum(axis=1)).ravel()
        norm = k1 * (1.0 - b + b * lengths / max(lengths.mean(), 1e-12))
        tf = counts.data
        row_of_entry = np.repeat(np.arange(n_docs), np.diff(counts.indptr))
        weights = counts.copy()
        weights.data = idf[counts.indices] * tf * (k1 + 1.0) / (tf + norm[row_of_entry])
        return weights

    def _weight_queries(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        return counts
