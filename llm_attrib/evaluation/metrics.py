"""Attribution metrics: pure functions on tensors, no training, no I/O.

Sign convention throughout (the library's contract): a *positive* attribution score means the training
example *raises* the query's measurement (log Pr(completion | prompt)); removing it would lower it.

* `linear_datamodeling_score` — LDS (Park et al. 2023): does the sum of a subset's scores rank the models
  retrained on random subsets the way their actual measurements do?
* `loo_correlation` — correlation between predicted and actual leave-one-out effects.
* `auroc`, `precision_at_k` — detection of flagged (e.g. mislabelled) examples from a per-example score.
* `recall_at_k`, `mean_reciprocal_rank` — retrieval of ground-truth relevant training examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.stats import rankdata


@dataclass(frozen=True)
class CorrelationSummary:
    """A per-query correlation and its mean over queries.

    mean:      mean of the defined per-query correlations (NaN if none is defined).
    stderr:    standard error of that mean, ``std(ddof=1) / sqrt(n_defined)`` (NaN with fewer than 2).
    per_query: ``[n_query]`` correlations; NaN where one side is constant (the query is then left out).
    """

    mean: float
    stderr: float
    per_query: torch.Tensor

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "stderr": self.stderr, "n_query": int((~self.per_query.isnan()).sum())}


def _as_numpy(x: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _column_correlation(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """Correlation of ``x[:, j]`` with ``y[:, j]`` for every column ``j``; NaN where a column is constant."""
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', not {method!r}")
    if method == "spearman":
        x, y = rankdata(x, axis=0), rankdata(y, axis=0)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    denominator = np.sqrt((x * x).sum(axis=0) * (y * y).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (x * y).sum(axis=0) / np.where(denominator > 0, denominator, 1.0), np.nan)


def _summarise(per_query: np.ndarray) -> CorrelationSummary:
    defined = per_query[~np.isnan(per_query)]
    mean = float(defined.mean()) if defined.size else math.nan
    stderr = float(defined.std(ddof=1) / math.sqrt(defined.size)) if defined.size > 1 else math.nan
    return CorrelationSummary(mean=mean, stderr=stderr, per_query=torch.from_numpy(per_query))


def subset_predictions(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The additive datamodel's prediction for each subset: ``[M, n_query] = masks[M, n_train] @ scores[n_query, n_train]ᵀ``.

    With the library's sign, a larger prediction means the subset should give the query a higher log-probability.
    """
    if scores.shape[1] != masks.shape[1]:
        raise ValueError(f"scores cover {scores.shape[1]} training examples but the masks cover {masks.shape[1]}")
    return masks.to(torch.float64) @ scores.to(torch.float64).T


def linear_datamodeling_score(scores: torch.Tensor, masks: torch.Tensor, outcomes: torch.Tensor) -> CorrelationSummary:
    """Linear Datamodeling Score.

    scores:   ``[n_query, n_train]`` attributions (positive = raises the query's measurement).
    masks:    ``[M, n_train]`` booleans, ``masks[m, j]`` = training example ``j`` is in subset ``m``.
    outcomes: ``[M, n_query]`` measurement of each query under the model retrained on subset ``m``
              (e.g. log Pr(completion | prompt); *higher = more likely*, same direction as the scores).

    For each query, the Spearman correlation over the ``M`` subsets between the summed scores of the subset's
    members and the actual outcome; reported as the mean over queries with its standard error. Perfect
    attributions of a linear datamodel give 1; scores unrelated to the outcomes give about 0; scores with
    the wrong sign give negative values.
    """
    if outcomes.shape != (masks.shape[0], scores.shape[0]):
        raise ValueError(
            f"outcomes must be [M={masks.shape[0]}, n_query={scores.shape[0]}], got {tuple(outcomes.shape)}"
        )
    predicted = subset_predictions(scores, masks)
    return _summarise(_column_correlation(_as_numpy(predicted), _as_numpy(outcomes), "spearman"))


def loo_correlation(predicted: torch.Tensor, actual: torch.Tensor, method: str = "pearson") -> CorrelationSummary:
    """Correlation between predicted and actual leave-one-out effects, per query, over the removed examples.

    predicted: ``[n_query, n_removed]`` attribution scores of the removed examples.
    actual:    ``[n_query, n_removed]`` actual effect of each example:
               ``measurement(trained on all) - measurement(trained without the example)``,
               so a positive effect, like a positive score, means the example raises the measurement.
    method:    "pearson" or "spearman".
    """
    if predicted.shape != actual.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and actual {tuple(actual.shape)} must have the same shape")
    return _summarise(_column_correlation(_as_numpy(predicted).T, _as_numpy(actual).T, method))


def auroc(scores: torch.Tensor | Sequence[float], labels: torch.Tensor | Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` ranking the ``labels == True`` examples first.

    scores: ``[n]``; a *higher* score means "more likely flagged" (pass e.g. the negated valuation if low
            values are the suspicious ones). labels: ``[n]`` booleans, True = truly flagged (e.g. corrupted).
    Ties count one half (Mann–Whitney U). A perfect ranking gives 1, the reversed ranking 0, random ≈ 0.5.
    """
    s, y = _as_numpy(scores), _as_numpy(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs at least one flagged and one unflagged example")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at_k(scores: torch.Tensor | Sequence[float], labels: torch.Tensor | Sequence[bool], k: int) -> float:
    """Fraction of the ``k`` highest-scored examples that are flagged (``labels == True``); higher score = more suspicious.

    Ties at the cut are broken by position (stable sort), so give distinct scores for an exact answer.
    """
    s, y = _as_numpy(scores), _as_numpy(labels).astype(bool)
    if not 1 <= k <= s.size:
        raise ValueError(f"k must be between 1 and {s.size}, not {k}")
    top = np.argsort(-s, kind="stable")[:k]
    return float(y[top].mean())


def _relevant_ranks(scores: torch.Tensor, relevant: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """For each query, the 1-based ranks of its relevant training columns (highest score = rank 1)."""
    if len(relevant) != scores.shape[0]:
        raise ValueError(f"{len(relevant)} relevant sets for {scores.shape[0]} queries")
    order = np.argsort(-_as_numpy(scores), axis=1, kind="stable")
    rank_of = np.empty_like(order)
    rank_of[np.arange(order.shape[0])[:, None], order] = np.arange(1, order.shape[1] + 1)
    return [rank_of[q, np.asarray(list(rel), dtype=np.int64)] for q, rel in enumerate(relevant)]


def recall_at_k(scores: torch.Tensor, relevant: Sequence[Sequence[int]], k: int) -> float:
    """Mean over queries of the fraction of each query's relevant training examples found in its top ``k``.

    scores:   ``[n_query, n_train]``; higher = retrieved first (positive = raises the query's measurement).
    relevant: for each query, the column indices of its ground-truth relevant training examples (non-empty).
    """
    ranks = _relevant_ranks(scores, relevant)
    if any(r.size == 0 for r in ranks):
        raise ValueError("every query needs at least one relevant training example")
    return float(np.mean([(r <= k).mean() for r in ranks]))


def mean_reciprocal_rank(scores: torch.Tensor, relevant: Sequence[Sequence[int]]) -> float:
    """Mean over queries of ``1 / rank`` of the best-ranked relevant training example (rank 1 = highest score)."""
    ranks = _relevant_ranks(scores, relevant)
    if any(r.size == 0 for r in ranks):
        raise ValueError("every query needs at least one relevant training example")
    return float(np.mean([1.0 / r.min() for r in ranks]))
