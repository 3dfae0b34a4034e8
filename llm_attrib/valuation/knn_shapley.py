"""KNN-Shapley in closed form (Jia et al. 2019, "Efficient task-specific data valuation for nearest
neighbor algorithms"): exact Shapley values of a K-nearest-neighbour utility in ``O(n log n)`` per
validation point, no model training.

Utility, per validation point ``(x, t)`` and averaged over validation points:
``U(S) = (1/K) Σ_{j ∈ K nearest of x in S} g(y_j, t)`` (fewer than K neighbours when ``|S| < K``; ``U(∅) = 0``).
Classification: ``g = 1[y_j = t]`` — Jia et al.'s Theorem 1, the likelihood of the right label.
Regression: ``g = −(y_j − t)²`` — the negative mean squared error of the neighbours' labels. This is our
choice, not Jia et al.'s regression theorem (which scores the squared error of the neighbours' mean and
needs an ``O(n²)``-term recursion): the same recursion serves both tasks, and it is exact for this utility.

With points sorted nearest first (``α_1 … α_N``) the values are
``s_N = g_N · min(K, N) / (N K)`` and ``s_i = s_{i+1} + (g_i − g_{i+1}) / K · min(K, i) / i``.
Higher = more valuable; values sum to ``U(D)`` (efficiency).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import pairwise_distances
from sklearn.utils.multiclass import type_of_target

from llm_attrib.errors import UserInputError
from llm_attrib.valuation.base import AT_LEAST_ONE, Valuation
from llm_attrib.valuation.result import ValuationResult

NeighbourScore = Callable[[np.ndarray, np.ndarray], np.ndarray]

NEIGHBOUR_SCORES: dict[str, NeighbourScore] = {
    "classification": lambda neighbour_labels, target: (neighbour_labels == target).astype(float),
    "regression": lambda neighbour_labels, target: -((neighbour_labels - target) ** 2),
}


def resolve_task(task: str, y: np.ndarray) -> str:
    """``"auto"``: regression for continuous targets, classification otherwise."""
    if task == "auto":
        return "regression" if type_of_target(y) == "continuous" else "classification"
    if task not in NEIGHBOUR_SCORES:
        raise UserInputError(f"unknown task {task!r}: choose auto, {', '.join(NEIGHBOUR_SCORES)}")
    return task


def knn_utility(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                n_neighbors: int, task: str = "auto", metric: str = "euclidean") -> Callable[[Sequence[int]], float]:
    """The utility ``U(S)`` that `KNNShapley` values exactly (ties in distance broken by index)."""
    score = NEIGHBOUR_SCORES[resolve_task(task, y_train)]
    order = np.argsort(pairwise_distances(X_val, X_train, metric=metric), axis=1, kind="stable")
    neighbour_scores = score(y_train[order], y_val[:, None])  # [n_val, n_train], nearest first

    def utility(subset: Sequence[int]) -> float:
        member = np.isin(order, np.asarray(subset, dtype=int))
        kept_rank = np.cumsum(member, axis=1)
        in_top_k = member & (kept_rank <= n_neighbors)
        return float(np.mean(np.sum(neighbour_scores * in_top_k, axis=1)) / n_neighbors)

    return utility


class KNNShapley(Valuation):
    """Exact Shapley values of the K-nearest-neighbour utility (see module docstring).

    n_neighbors: K. task: ``"auto"``, ``"classification"`` or ``"regression"``. metric: any
    `sklearn.metrics.pairwise_distances` metric; scale features first. batch_size: validation points per
    block (memory ``batch_size × n_train``).
    """

    method_name = "knn-shapley"
    _parameter_constraints = {"n_neighbors": [AT_LEAST_ONE], "batch_size": [AT_LEAST_ONE]}

    def __init__(self, n_neighbors: int = 5, task: str = "auto", metric: str = "euclidean",
                 batch_size: int = 256) -> None:
        self.n_neighbors = n_neighbors
        self.task = task
        self.metric = metric
        self.batch_size = batch_size

    def _value(self, X_train, y_train, X_val, y_val) -> ValuationResult:
        score = NEIGHBOUR_SCORES[resolve_task(self.task, y_train)]
        n = len(y_train)
        ranks = np.arange(1, n + 1)
        step_factor = np.minimum(self.n_neighbors, ranks[:-1]) / ranks[:-1] / self.n_neighbors
        totals = np.zeros(n)
        for start in range(0, len(y_val), self.batch_size):
            X_block, y_block = X_val[start:start + self.batch_size], y_val[start:start + self.batch_size]
            order = np.argsort(pairwise_distances(X_block, X_train, metric=self.metric), axis=1, kind="stable")
            g = score(y_train[order], y_block[:, None])  # [block, n], nearest first
            farthest = g[:, -1:] * min(self.n_neighbors, n) / (n * self.n_neighbors)
            steps = (g[:, :-1] - g[:, 1:]) * step_factor  # s_i − s_{i+1}
            sorted_values = farthest + np.concatenate([np.cumsum(steps[:, ::-1], axis=1)[:, ::-1],
                                                       np.zeros((len(g), 1))], axis=1)
            unsorted = np.empty_like(sorted_values)
            np.put_along_axis(unsorted, order, sorted_values, axis=1)
            totals += unsorted.sum(axis=0)
        values = totals / len(y_val)
        return ValuationResult(values, np.zeros(n), np.full(n, len(y_val)), self.method_name, 0)
