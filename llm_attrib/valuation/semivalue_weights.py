"""Semivalue weights: ``φ_i = Σ_{S ⊆ D∖{i}} w(|S|) [U(S ∪ {i}) − U(S)]`` with ``Σ_k C(n−1, k) w(k) = 1``.

Each function returns ``log w(k)`` for ``n`` training points and subset sizes ``k`` (array), in log space so
that large ``n`` neither overflows nor underflows.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.special import betaln, gammaln

LogWeight = Callable[[int, np.ndarray], np.ndarray]


def log_binomial(n: int | np.ndarray, k: np.ndarray) -> np.ndarray:
    """``log C(n, k)``."""
    return gammaln(np.asarray(n) + 1.0) - gammaln(np.asarray(k) + 1.0) - gammaln(np.asarray(n) - k + 1.0)


def shapley_log_weight(n: int, k: np.ndarray) -> np.ndarray:
    """Shapley: ``w(k) = 1 / (n C(n−1, k))`` — every subset size counts equally."""
    return -np.log(n) - log_binomial(n - 1, np.asarray(k, dtype=float))


def banzhaf_log_weight(n: int, k: np.ndarray) -> np.ndarray:
    """Banzhaf: ``w(k) = 2^{−(n−1)}`` — every subset counts equally."""
    return np.full(np.shape(k), -(n - 1) * np.log(2.0))


def beta_log_weight(alpha: float, beta: float) -> LogWeight:
    """Beta Shapley (Kwon & Zou 2022): ``w(k) = B(k + β, n − 1 − k + α) / B(α, β)``.

    ``α = β = 1`` is the Shapley value; ``α > β`` (e.g. ``(16, 1)``) weights small subsets more, where one
    point's contribution is clearest.
    """

    def log_weight(n: int, k: np.ndarray) -> np.ndarray:
        k = np.asarray(k, dtype=float)
        return betaln(k + beta, n - 1 - k + alpha) - betaln(alpha, beta)

    return log_weight
