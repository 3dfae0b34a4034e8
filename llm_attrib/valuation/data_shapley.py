"""Data Shapley by truncated Monte Carlo (TMC; Ghorbani & Zou 2019).

Each sampled permutation adds training points one at a time and credits each with its marginal
contribution ``U(prefix + i) − U(prefix)``; a point's value is its mean over permutations (higher = more
valuable). Truncation: once ``|U(D) − U(prefix)| < truncation_tolerance · |U(D)|`` the rest of the
permutation is credited 0 without training. Without truncation every permutation's contributions sum to
``U(D) − U(∅)`` (efficiency).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llm_attrib.valuation.base import AT_LEAST_ONE, NON_NEGATIVE, UtilityValuation
from llm_attrib.valuation.permutation import sample_permutations
from llm_attrib.valuation.result import ValuationResult
from llm_attrib.valuation.sampling import as_criterion
from llm_attrib.valuation.stopping import StoppingCriterion
from llm_attrib.valuation.utility import Scorer


class TMCShapley(UtilityValuation):
    """Truncated Monte Carlo Data Shapley.

    stopping: a `StoppingCriterion` or an int (that many permutations), e.g.
    ``MaxUtilityEvaluations(20_000) | (RelativeChange(0.01) & MinIterations(50))``.
    truncation_tolerance: ``None`` or 0 disables truncation.
    After ``fit``, ``samples_`` holds the permutations' marginal contributions (`PermutationSamples`): Beta Shapley or
    any semivalue re-weights them without training again (``BetaShapley(...).value_samples(tmc.samples_)``).
    """

    method_name = "tmc-shapley"
    _parameter_constraints = {**UtilityValuation._parameter_constraints, "stopping": [AT_LEAST_ONE, StoppingCriterion],
                              "truncation_tolerance": [None, NON_NEGATIVE], "permutations_per_round": [AT_LEAST_ONE]}

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
        # Shapley's position weights n · w(j) · C(n − 1, j) are all 1: each term is a plain marginal contribution
        estimate = sample_permutations(utility, np.ones(n), self.truncation_tolerance, as_criterion(self.stopping),
                                       self.n_jobs, self.permutations_per_round, self.random_state, self.progress,
                                       "TMC Shapley")
        self.samples_ = estimate.samples
        return ValuationResult(estimate.values, estimate.stderr, np.full(n, estimate.n_permutations),
                               self.method_name, estimate.n_evaluations,
                               extra={"full_score": estimate.full_score, "empty_score": utility([])})
