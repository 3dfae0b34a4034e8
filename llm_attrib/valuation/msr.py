"""Maximum sample reuse (MSR) for semivalues: one sampler of subsets and their utilities, many weightings.

Every sampled subset ``S`` (with its utility ``U(S)``) informs every point ``i``: it is a draw of
``U(T ∪ {i})`` if ``i ∈ S`` and of ``U(T)`` otherwise. With subsets drawn from ``q``, the semivalue
``φ_i = Σ_{T ⊆ D∖{i}} w(|T|) [U(T ∪ {i}) − U(T)]`` is estimated by two self-normalised importance-weighted
means (each side's weights sum to 1 exactly, ``Σ_k C(n−1, k) w(k) = 1``):

    φ_i ≈ Σ_{S ∋ i} a_S U(S) / Σ_{S ∋ i} a_S − Σ_{S ∌ i} b_S U(S) / Σ_{S ∌ i} b_S,
    a_S = w(|S| − 1) / q(S),  b_S = w(|S|) / q(S).

For Banzhaf with independent inclusion (probability ½) all weights are equal and this is Wang & Jia's
(2023) MSR estimator: mean utility of subsets with ``i`` minus mean utility of subsets without it. The same
`SampledUtilities` serve Beta Shapley, Shapley or Banzhaf (`Semivalue.value_samples`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np

from llm_attrib.errors import UserInputError
from llm_attrib.valuation.parallel import root_entropy, task_rng
from llm_attrib.valuation.sampling import sample_until
from llm_attrib.valuation.semivalue_weights import LogWeight, log_binomial
from llm_attrib.valuation.stopping import StoppingCriterion
from llm_attrib.valuation.utility import Utility


SizeDistribution = Callable[[int, LogWeight], np.ndarray]
MATCHED_UNIFORM_SHARE = 0.1  # share of uniform sizes in the "matched" sampler (defensive importance sampling)


def _independent_sizes(n: int, log_weight: LogWeight) -> np.ndarray:
    # each point in with probability 1/2: size ~ Binomial(n, 1/2), q(S) = 2^-n; the natural sampler for Banzhaf
    return log_binomial(n, np.arange(n + 1.0)) - n * np.log(2.0)


def _uniform_sizes(n: int, log_weight: LogWeight) -> np.ndarray:
    # size uniform on 0..n: every size is seen equally often, whatever the weighting
    return np.full(n + 1, -np.log(n + 1.0))


def _matched_sizes(n: int, log_weight: LogWeight) -> np.ndarray:
    """Sizes where the weighting has its mass: ``½ [m(s − 1) + m(s)]`` with ``m(k) = C(n−1, k) w(k)`` (the
    semivalue's distribution of ``|T|``; ``s − 1`` for subsets with ``i``, ``s`` without), mixed with
    ``MATCHED_UNIFORM_SHARE`` of uniform sizes so that every size keeps some probability. For Banzhaf this is
    Binomial(n, ½), for Shapley nearly uniform; for Beta(16, 1) most subsets have fewer than n/8 points."""
    k = np.arange(n, dtype=float)
    mass = np.exp(log_binomial(n - 1, k) + log_weight(n, k))
    matched = 0.5 * (np.concatenate([[0.0], mass]) + np.concatenate([mass, [0.0]]))
    return np.log((1 - MATCHED_UNIFORM_SHARE) * matched / matched.sum() + MATCHED_UNIFORM_SHARE / (n + 1))


SIZE_DISTRIBUTIONS: dict[str, SizeDistribution] = {
    "independent": _independent_sizes,
    "uniform-size": _uniform_sizes,
    "matched": _matched_sizes,
}
"""Subset samplers by name: ``(n, log_weight) -> log P(|S| = s)`` float ``[n + 1]``; a subset is a size drawn
from it, then a uniform subset of that size, so ``log q(S) = log P(|S|) − log C(n, |S|)``."""


def draw_subset(rng: np.random.Generator, log_size_probabilities: np.ndarray) -> np.ndarray:
    """Bool mask ``[n]``: a size drawn from ``exp(log_size_probabilities)`` ``[n + 1]``, then a uniform subset."""
    n = len(log_size_probabilities) - 1
    probabilities = np.exp(log_size_probabilities)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=rng.choice(n + 1, p=probabilities / probabilities.sum()), replace=False)] = True
    return mask


@dataclass(frozen=True)
class SampledUtilities:
    """Subsets as bool masks ``[m, n]``, their utilities ``[m]``, and ``log q(S)`` ``[m]``, the log probability
    of each subset under the sampler that drew it (any weighting can reuse them)."""

    masks: np.ndarray
    utilities: np.ndarray
    log_probabilities: np.ndarray

    def __len__(self) -> int:
        return len(self.utilities)


def estimate_semivalue(samples: SampledUtilities, log_weight: LogWeight) -> tuple[np.ndarray, np.ndarray]:
    """MSR estimate ``(values, stderr)``, float ``[n]`` each (see module docstring).

    The standard error is the delta-method one of each self-normalised mean. A point never seen on one side
    (always or never in the sampled subsets) gets value 0 and an infinite standard error.
    """
    masks = samples.masks.astype(float)
    n = masks.shape[1]
    sizes = samples.masks.sum(axis=1)
    log_q = samples.log_probabilities
    centred = samples.utilities - samples.utilities.mean()  # self-normalised means are shift-invariant
    mean_in, var_in = _weighted_means(masks, centred, log_weight(n, np.maximum(sizes - 1, 0)) - log_q, sizes > 0)
    mean_out, var_out = _weighted_means(1.0 - masks, centred, log_weight(n, np.minimum(sizes, n - 1)) - log_q,
                                        sizes < n)
    return mean_in - mean_out, np.sqrt(var_in + var_out)


def _weighted_means(membership: np.ndarray, utilities: np.ndarray, log_weights: np.ndarray,
                    valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``membership [m, n]``: the weighted mean of ``utilities`` over its rows, and its variance."""
    weights = np.where(valid, np.exp(log_weights - np.max(log_weights[valid], initial=-np.inf)), 0.0)
    total = membership.T @ weights
    seen = total > 0
    safe_total = np.where(seen, total, 1.0)
    mean = (membership.T @ (weights * utilities)) / safe_total
    squared = weights**2
    spread = membership.T @ (squared * utilities**2) - 2 * mean * (membership.T @ (squared * utilities)) \
        + mean**2 * (membership.T @ squared)
    variance = np.where(seen, np.maximum(spread, 0.0) / safe_total**2, np.inf)
    return np.where(seen, mean, 0.0), variance


def sample_subsets(utility: Utility, log_weight: LogWeight, subset_distribution: str, stopping: StoppingCriterion,
                   n_jobs: int | None, subsets_per_round: int, random_state: int | None, progress: bool,
                   description: str) -> SampledUtilities:
    """Seeded subsets drawn by ``SIZE_DISTRIBUTIONS[subset_distribution]`` for the weighting ``log_weight``,
    with their utilities, until ``stopping`` (an MSR estimate of that weighting after each round)."""
    if subset_distribution not in SIZE_DISTRIBUTIONS:
        raise UserInputError(f"unknown subset_distribution {subset_distribution!r}: "
                             f"choose one of {', '.join(SIZE_DISTRIBUTIONS)}")
    log_sizes = SIZE_DISTRIBUTIONS[subset_distribution](utility.n_train, log_weight)
    accumulator = _SubsetAccumulator(log_sizes, log_weight)
    work = partial(_sample_subsets, utility, root_entropy(random_state), log_sizes)
    sample_until(work, accumulator, stopping, n_jobs, subsets_per_round, progress, description)
    return accumulator.samples()


def _sample_subsets(utility: Utility, entropy: int, log_size_probabilities: np.ndarray,
                    tasks: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Per task: ``(mask [n], U(subset))`` for one seeded subset."""
    results = []
    for task in tasks:
        mask = draw_subset(task_rng(entropy, int(task)), log_size_probabilities)
        results.append((mask, utility(np.flatnonzero(mask))))
    return results


class _SubsetAccumulator:
    def __init__(self, log_size_probabilities: np.ndarray, log_weight: LogWeight) -> None:
        self.n_iterations = 0
        self.n_evaluations = 0
        self.log_size_probabilities = log_size_probabilities
        self.log_weight = log_weight
        self.masks: list[np.ndarray] = []
        self.utilities: list[float] = []

    def add(self, results: Sequence[tuple[np.ndarray, float]]) -> None:
        for mask, utility in results:
            self.masks.append(mask)
            self.utilities.append(utility)
        self.n_iterations = self.n_evaluations = len(self.utilities)

    def samples(self) -> SampledUtilities:
        masks = np.array(self.masks)
        n = masks.shape[1]
        sizes = masks.sum(axis=1)
        return SampledUtilities(masks, np.array(self.utilities),
                                self.log_size_probabilities[sizes] - log_binomial(n, sizes.astype(float)))

    def estimate(self) -> tuple[np.ndarray, np.ndarray]:
        return estimate_semivalue(self.samples(), self.log_weight)
