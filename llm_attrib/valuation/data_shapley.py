"""Data Shapley by truncated Monte Carlo (TMC; Ghorbani & Zou 2019).

Each sampled permutation adds training points one at a time and credits each with its marginal
contribution ``U(prefix + i) − U(prefix)``; a point's value is its mean over permutations (higher = more
valuable). Truncation: once ``|U(D) − U(prefix)| < truncation_tolerance · |U(D)|`` the rest of the
permutation is credited 0 without training. Without truncation every permutation's contributions sum to
``U(D) − U(∅)`` (efficiency).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import numpy as np

from llm_attrib.valuation.base import UtilityValuation
from llm_attrib.valuation.parallel import root_entropy, task_rng
from llm_attrib.valuation.result import ValuationResult
from llm_attrib.valuation.sampling import as_criterion, sample_until
from llm_attrib.valuation.stopping import StoppingCriterion
from llm_attrib.valuation.utility import Scorer, Utility


class TMCShapley(UtilityValuation):
    """Truncated Monte Carlo Data Shapley.

    stopping: a `StoppingCriterion` or an int (that many permutations), e.g.
    ``MaxUtilityEvaluations(20_000) | (RelativeChange(0.01) & MinIterations(50))``.
    truncation_tolerance: ``None`` or 0 disables truncation.
    """

    method_name = "tmc-shapley"

    def __init__(self, estimator: Any, stopping: StoppingCriterion | int = 100,
                 truncation_tolerance: float | None = 0.01, scorer: str | Scorer | None = None,
                 default_score: float = 0.0, permutations_per_round: int = 10, n_jobs: int | None = None,
                 random_state: int | None = None, progress: bool = False) -> None:
        self.estimator = estimator
        self.stopping = stopping
        self.truncation_tolerance = truncation_tolerance
        self.scorer = scorer
        self.default_score = default_score
        self.permutations_per_round = permutations_per_round
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.progress = progress

    def _value(self, X_train, y_train, X_val, y_val) -> ValuationResult:
        utility = self.make_utility(X_train, y_train, X_val, y_val)
        n = utility.n_train
        full_score = utility(np.arange(n))
        work = partial(_permutation_contributions, utility, root_entropy(self.random_state), full_score,
                       self.truncation_tolerance or 0.0)
        accumulator = _MeanAccumulator(n)
        values, stderr = sample_until(work, accumulator, as_criterion(self.stopping), self.n_jobs,
                                      self.permutations_per_round, self.progress, "TMC Shapley")
        counts = np.full(n, accumulator.n_iterations)
        return ValuationResult(values, stderr, counts, self.method_name, accumulator.n_evaluations + 1,
                               extra={"full_score": full_score, "empty_score": utility([])})


def _permutation_contributions(utility: Utility, entropy: int, full_score: float, tolerance: float,
                               tasks: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Per task: ``(marginal contributions [n], utility queries made)`` along one seeded permutation."""
    results = []
    for task in tasks:
        permutation = task_rng(entropy, int(task)).permutation(utility.n_train)
        contributions = np.zeros(utility.n_train)
        previous = utility([])
        queries = 1
        for position, point in enumerate(permutation):
            if abs(full_score - previous) < tolerance * abs(full_score):
                break
            score = utility(permutation[: position + 1])
            queries += 1
            contributions[point] = score - previous
            previous = score
        results.append((contributions, queries))
    return results


class _MeanAccumulator:
    """Running mean and standard error of per-permutation contribution vectors."""

    def __init__(self, n: int) -> None:
        self.n_iterations = 0
        self.n_evaluations = 0
        self.total = np.zeros(n)
        self.total_squares = np.zeros(n)

    def add(self, results: Sequence[tuple[np.ndarray, int]]) -> None:
        for contributions, queries in results:
            self.total += contributions
            self.total_squares += contributions**2
            self.n_iterations += 1
            self.n_evaluations += queries

    def estimate(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.total / self.n_iterations
        variance = np.maximum(self.total_squares / self.n_iterations - mean**2, 0.0)
        return mean, np.sqrt(variance / max(self.n_iterations - 1, 1))
