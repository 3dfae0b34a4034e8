"""Leave-one-out: ``v_i = U(D) − U(D ∖ {i})``, higher = removing the point hurts more."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from llm_attrib.valuation.base import UtilityValuation
from llm_attrib.valuation.parallel import parallel_map, split_evenly
from llm_attrib.valuation.result import ValuationResult
from llm_attrib.valuation.utility import Scorer, Utility


class LeaveOneOut(UtilityValuation):
    """Retrain without each point in turn (``n + 1`` fits). Deterministic: no ``random_state``."""

    method_name = "loo"

    def __init__(self, estimator: Any, scorer: str | Scorer | None = None, default_score: float = 0.0,
                 n_jobs: int | None = None) -> None:
        self.estimator = estimator
        self.scorer = scorer
        self.default_score = default_score
        self.n_jobs = n_jobs

    def _value(self, X_train, y_train, X_val, y_val) -> ValuationResult:
        utility = self.make_utility(X_train, y_train, X_val, y_val, cache=False)
        n = utility.n_train
        full = utility(np.arange(n))
        chunks = split_evenly(range(n), 4 * max(1, self.n_jobs or 1))
        without = np.concatenate(parallel_map(partial(_scores_without, utility), [(c,) for c in chunks], self.n_jobs))
        return ValuationResult(full - without, np.zeros(n), np.ones(n, dtype=int), self.method_name, n + 1)


def _scores_without(utility: Utility, points: np.ndarray) -> np.ndarray:
    everyone = np.arange(utility.n_train)
    return np.array([utility(np.delete(everyone, i)) for i in points])
