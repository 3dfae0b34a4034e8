"""`Semivalue`: the base of Beta Shapley and Data Banzhaf, a weighting ``w(k)`` estimated by a chosen sampler.

``φ_i = Σ_{S ⊆ D∖{i}} w(|S|) [U(S ∪ {i}) − U(S)]``; higher = more valuable. Samplers (``SEMIVALUE_SAMPLERS``):

- ``"permutation"``: marginal contributions along random permutations, each weighted by its position
  (`permutation`); unbiased, one term per point per permutation (n utility queries), unless truncated.
- ``"msr"``: maximum sample reuse (`msr`): every sampled subset informs every point; its ``samples_`` can be
  reweighted for any other semivalue without training again.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable

import numpy as np

from llm_attrib.errors import UserInputError
from llm_attrib.valuation.base import AT_LEAST_ONE, NON_NEGATIVE, UtilityValuation
from llm_attrib.valuation.msr import SampledUtilities, estimate_semivalue, sample_subsets
from llm_attrib.valuation.permutation import PermutationSamples, position_weights, sample_permutations
from llm_attrib.valuation.result import ValuationResult
from llm_attrib.valuation.sampling import as_criterion
from llm_attrib.valuation.semivalue_weights import LogWeight
from llm_attrib.valuation.stopping import StoppingCriterion
from llm_attrib.valuation.utility import Scorer, Utility

SUBSETS_PER_ROUND = 100  # "msr" rounds when samples_per_round is None
PERMUTATIONS_PER_ROUND = 10  # "permutation" rounds when samples_per_round is None


class Semivalue(UtilityValuation):
    """Base of semivalues. Subclasses give the weighting (`log_weight`).

    stopping: a `StoppingCriterion` or an int (that many samples: permutations or subsets).
    sampler: a key of `SEMIVALUE_SAMPLERS`.
    subset_distribution (``"msr"`` only): a key of `msr.SIZE_DISTRIBUTIONS`; ``"matched"`` draws sizes where
    this semivalue's weights are, ``"independent"`` suits Banzhaf.
    truncation_tolerance (``"permutation"`` only): ``None`` (unbiased) or TMC's rule: a permutation stops once
    ``|U(D) − U(prefix)| < tolerance · |U(D)|``, crediting later points 0 (fewer queries, values biased to 0).
    samples_per_round: samples between stopping checks (None: 100 subsets or 10 permutations).
    After ``fit``, ``samples_`` holds the sampler's subsets and utilities (``"msr"``) or permutations
    (``"permutation"``), which `value_samples` reuses for another weighting without training again.
    """

    _parameter_constraints = {**UtilityValuation._parameter_constraints, "stopping": [AT_LEAST_ONE, StoppingCriterion],
                              "truncation_tolerance": [None, NON_NEGATIVE], "samples_per_round": [None, AT_LEAST_ONE]}

    def __init__(self, estimator: Any, stopping: StoppingCriterion | int = 1000, sampler: str = "msr",
                 subset_distribution: str = "independent", truncation_tolerance: float | None = None,
                 scorer: str | Scorer | None = None, default_score: float = 0.0, samples_per_round: int | None = None,
                 n_jobs: int | None = None, random_state: int | None = None, progress: bool = False) -> None:
        self.estimator = estimator
        self.stopping = stopping
        self.sampler = sampler
        self.subset_distribution = subset_distribution
        self.truncation_tolerance = truncation_tolerance
        self.scorer = scorer
        self.default_score = default_score
        self.samples_per_round = samples_per_round
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.progress = progress

    @abstractmethod
    def log_weight(self) -> LogWeight:
        """``log w(k)`` of this semivalue (see `semivalue_weights`)."""

    def value_samples(self, samples: SampledUtilities | PermutationSamples) -> ValuationResult:
        """Values from another method's samples (``samples_``), without training again: MSR subsets and utilities,
        or permutations (`PermutationSamples`, e.g. TMC Shapley's; untruncated for an unbiased re-weighting)."""
        if isinstance(samples, PermutationSamples):
            n = samples.marginals.shape[1]
            values, stderr = samples.estimate(position_weights(n, self.log_weight()))
            return ValuationResult(values, stderr, np.full(n, len(samples)), self.method_name, samples.n_evaluations)
        values, stderr = estimate_semivalue(samples, self.log_weight())
        return ValuationResult(values, stderr, np.full(len(values), len(samples)), self.method_name, len(samples))

    def _value(self, X_train, y_train, X_val, y_val) -> ValuationResult:
        if self.sampler not in SEMIVALUE_SAMPLERS:
            raise UserInputError(f"unknown sampler {self.sampler!r}: choose one of {', '.join(SEMIVALUE_SAMPLERS)}")
        utility = self.make_utility(X_train, y_train, X_val, y_val)
        result, self.samples_ = SEMIVALUE_SAMPLERS[self.sampler](self, utility)
        return result


def _by_permutations(method: Semivalue, utility: Utility) -> tuple[ValuationResult, PermutationSamples]:
    estimate = sample_permutations(utility, position_weights(utility.n_train, method.log_weight()),
                                   method.truncation_tolerance, as_criterion(method.stopping), method.n_jobs,
                                   method.samples_per_round or PERMUTATIONS_PER_ROUND, method.random_state,
                                   method.progress, method.method_name)
    counts = np.full(utility.n_train, estimate.n_permutations)
    return (ValuationResult(estimate.values, estimate.stderr, counts, method.method_name, estimate.n_evaluations),
            estimate.samples)


def _by_msr(method: Semivalue, utility: Utility) -> tuple[ValuationResult, SampledUtilities]:
    samples = sample_subsets(utility, method.log_weight(), method.subset_distribution, as_criterion(method.stopping),
                             method.n_jobs, method.samples_per_round or SUBSETS_PER_ROUND, method.random_state,
                             method.progress, method.method_name)
    return method.value_samples(samples), samples


SEMIVALUE_SAMPLERS: dict[str, Callable[[Semivalue, Utility], tuple[ValuationResult, Any]]] = {
    "permutation": _by_permutations,
    "msr": _by_msr,
}
"""Samplers by name: ``(method, utility) -> (result, samples_)``."""
