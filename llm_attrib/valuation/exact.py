"""Exact semivalues by enumerating all ``2^n`` subsets: ground truth for tests and tiny data sets (n ≲ 15)."""

from __future__ import annotations

from itertools import combinations
from typing import Callable, Sequence

import numpy as np

from llm_attrib.valuation.semivalue_weights import LogWeight, banzhaf_log_weight, shapley_log_weight

SubsetUtility = Callable[[Sequence[int]], float]


def exact_semivalue(utility: SubsetUtility, n: int, log_weight: LogWeight) -> np.ndarray:
    """``φ_i = Σ_{S ⊆ D∖{i}} w(|S|) [U(S ∪ {i}) − U(S)]`` for ``i < n``; float ``[n]``, higher = more valuable.

    ``utility`` takes a tuple of training indices; it is called once per subset.
    """
    scores = {subset: utility(subset) for size in range(n + 1) for subset in combinations(range(n), size)}
    weights = np.exp(log_weight(n, np.arange(n)))
    values = np.zeros(n)
    for subset, score in scores.items():
        for i in range(n):
            if i not in subset:
                with_i = tuple(sorted(subset + (i,)))
                values[i] += weights[len(subset)] * (scores[with_i] - score)
    return values


def exact_shapley(utility: SubsetUtility, n: int) -> np.ndarray:
    """Exact Shapley values (they sum to ``U(D) − U(∅)``); float ``[n]``."""
    return exact_semivalue(utility, n, shapley_log_weight)


def exact_banzhaf(utility: SubsetUtility, n: int) -> np.ndarray:
    """Exact Banzhaf values (average marginal contribution over all subsets); float ``[n]``."""
    return exact_semivalue(utility, n, banzhaf_log_weight)
