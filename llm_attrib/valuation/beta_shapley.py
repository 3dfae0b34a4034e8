"""Beta Shapley (Kwon & Zou 2022): a semivalue weighting subset sizes by a Beta(α, β) prior, estimated by MSR.

Higher = more valuable. ``α = β = 1`` is the Shapley value; ``(16, 1)``, the paper's choice for noisy
labels, weights small subsets, where one point's contribution is clearest.
"""

from __future__ import annotations

from typing import Any

from llm_attrib.valuation.msr import MSRSemivalue
from llm_attrib.valuation.semivalue_weights import LogWeight, beta_log_weight
from llm_attrib.valuation.stopping import StoppingCriterion
from llm_attrib.valuation.utility import Scorer


class BetaShapley(MSRSemivalue):
    """Beta(α, β) Shapley by maximum sample reuse; by default subset sizes are drawn where the Beta weights
    are (``"matched"``: for (16, 1), mostly small subsets), and importance weights correct for it (other
    parameters: see `MSRSemivalue`)."""

    method_name = "beta-shapley"

    def __init__(self, estimator: Any, alpha: float = 16.0, beta: float = 1.0,
                 stopping: StoppingCriterion | int = 1000, subset_distribution: str = "matched",
                 scorer: str | Scorer | None = None, default_score: float = 0.0, subsets_per_round: int = 100,
                 n_jobs: int | None = None, random_state: int | None = None, progress: bool = False) -> None:
        super().__init__(estimator, stopping, subset_distribution, scorer, default_score, subsets_per_round,
                         n_jobs, random_state, progress)
        self.alpha = alpha
        self.beta = beta

    def log_weight(self) -> LogWeight:
        return beta_log_weight(self.alpha, self.beta)
