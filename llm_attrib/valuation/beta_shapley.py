"""Beta Shapley (Kwon & Zou 2022): a semivalue weighting subset sizes by a Beta(α, β) prior.

Higher = more valuable. ``α = β = 1`` is the Shapley value; ``(16, 1)``, the paper's choice for noisy
labels, weights small subsets, where one point's contribution is clearest.
"""

from __future__ import annotations

from typing import Any

from llm_attrib.valuation.base import POSITIVE
from llm_attrib.valuation.semivalue import Semivalue
from llm_attrib.valuation.semivalue_weights import LogWeight, beta_log_weight
from llm_attrib.valuation.stopping import StoppingCriterion
from llm_attrib.valuation.utility import Scorer


class BetaShapley(Semivalue):
    """Beta(α, β) Shapley. By default sampled by permutations, each marginal contribution weighted by its
    position, ``n · w(j) · C(n − 1, j)`` (unbiased; see `permutation`); ``sampler="msr"`` reuses subsets
    instead, with sizes drawn where the Beta weights are (``subset_distribution="matched"``: for (16, 1),
    mostly small subsets) and importance weights correcting for it. ``stopping`` defaults to 100 permutations
    (``100 · n`` utility queries, as TMC without truncation); pass e.g. ``MaxUtilityEvaluations(k)`` to cap the
    cost whatever the sampler (other parameters: see `Semivalue`)."""

    method_name = "beta-shapley"
    _parameter_constraints = {**Semivalue._parameter_constraints, "alpha": [POSITIVE], "beta": [POSITIVE]}

    def __init__(self, estimator: Any, alpha: float = 16.0, beta: float = 1.0,
                 stopping: StoppingCriterion | int = 100, sampler: str = "permutation",
                 subset_distribution: str = "matched", truncation_tolerance: float | None = None,
                 scorer: str | Scorer | None = None, default_score: float = 0.0, samples_per_round: int | None = None,
                 n_jobs: int | None = None, random_state: int | None = None, progress: bool = False) -> None:
        super().__init__(estimator, stopping, sampler, subset_distribution, truncation_tolerance, scorer,
                         default_score, samples_per_round, n_jobs, random_state, progress)
        self.alpha = alpha
        self.beta = beta

    def log_weight(self) -> LogWeight:
        return beta_log_weight(self.alpha, self.beta)
