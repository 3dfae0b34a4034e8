"""Semivalues by sampling permutations: marginal contributions along seeded random permutations, each weighted
by its position. Serves TMC Shapley and the permutation sampler of every semivalue (Beta Shapley, Banzhaf).

A semivalue is ``φ_i = Σ_{S ⊆ D∖{i}} w(|S|) [U(S ∪ {i}) − U(S)]``. In a uniformly random permutation of the
``n`` points, the prefix before ``i`` has size ``j`` with probability ``1/n`` and, given ``j``, is a uniform
subset of ``D∖{i}`` of that size. So ``Δ_i = U(prefix ∪ {i}) − U(prefix)`` has
``E[c(j) Δ_i] = Σ_j (1/n) c(j) · avg_{|S| = j} Δ_i(S)``, which is ``φ_i`` exactly when

    c(j) = n · w(j) · C(n − 1, j)        (the position weight; j = 0 … n − 1 points before i).

``c(j) / n = C(n−1, j) w(j)`` is the semivalue's distribution of ``|S|`` (it sums to 1): for Shapley
``c ≡ 1`` (TMC's plain mean), for Beta(α, β) ``C(n−1, j) w(j)`` is the Beta-binomial(n − 1, β, α) mass, so
Beta(16, 1) puts most weight on the first ~n/8 positions. One permutation gives every point one term, at
``n`` utility queries (each prefix's utility is reused as the next one's baseline); a value is the mean of its
terms over permutations and its standard error their standard deviation / √(permutations − 1).

Truncation (optional, as in TMC): once ``|U(D) − U(prefix)| < tolerance · |U(D)|`` the rest of the permutation
is credited 0 without training. It saves queries but biases values (towards 0 for late points).

The raw marginal contributions and positions of every permutation are kept (`PermutationSamples`, ``8 · 2n`` bytes
per permutation), so any other semivalue is one re-weighting away without training again: TMC Shapley's permutations
give Beta Shapley (`Semivalue.value_samples`), as one marginal matrix serves every weighting.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

import numpy as np

from llm_attrib.valuation.parallel import root_entropy, task_rng
from llm_attrib.valuation.sampling import sample_until
from llm_attrib.valuation.semivalue_weights import LogWeight, log_binomial
from llm_attrib.valuation.stopping import StoppingCriterion
from llm_attrib.valuation.utility import Utility


def position_weights(n: int, log_weight: LogWeight) -> np.ndarray:
    """``c(j) = n · w(j) · C(n − 1, j)`` for ``j = 0 … n − 1``, float ``[n]`` (mean 1 over positions)."""
    j = np.arange(n, dtype=float)
    return n * np.exp(log_weight(n, j) + log_binomial(n - 1, j))


@dataclass(frozen=True)
class PermutationSamples:
    """Sampled permutations as ``marginals`` float ``[P, n]`` (``Δ_i`` of point ``i``, 0 where truncated) and
    ``positions`` int ``[P, n]`` (how many points preceded ``i``), with the utility queries they cost."""

    marginals: np.ndarray
    positions: np.ndarray
    n_evaluations: int

    def __len__(self) -> int:
        return len(self.marginals)

    def estimate(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values and standard errors ``[n]`` of the semivalue with position weights ``weights`` ``[n]``."""
        terms = weights[self.positions] * self.marginals
        mean = terms.mean(axis=0)
        variance = np.maximum((terms**2).mean(axis=0) - mean**2, 0.0)
        return mean, np.sqrt(variance / max(len(terms) - 1, 1))


@dataclass(frozen=True)
class PermutationEstimate:
    """Values and standard errors (float ``[n]``), permutations drawn, utility queries made (``U(D)`` included),
    ``U(D)``, and the samples themselves (for other weightings)."""

    values: np.ndarray
    stderr: np.ndarray
    n_permutations: int
    n_evaluations: int
    full_score: float
    samples: PermutationSamples


def sample_permutations(utility: Utility, weights: np.ndarray, truncation_tolerance: float | None,
                        stopping: StoppingCriterion, n_jobs: int | None, permutations_per_round: int,
                        random_state: int | None, progress: bool, description: str) -> PermutationEstimate:
    """Mean over seeded permutations of ``weights[j] · Δ_i`` for each point ``i`` at position ``j``; higher =
    more valuable. ``truncation_tolerance``: ``None`` or 0 evaluates every position (unbiased)."""
    full_score = utility(np.arange(utility.n_train))
    work = partial(_permutation_contributions, utility, root_entropy(random_state), full_score,
                   truncation_tolerance or 0.0)
    accumulator = _PermutationAccumulator(weights)
    values, stderr = sample_until(work, accumulator, stopping, n_jobs, permutations_per_round, progress,
                                  description)
    return PermutationEstimate(values, stderr, accumulator.n_iterations, accumulator.n_evaluations + 1, full_score,
                               accumulator.samples(extra_evaluations=1))


def _permutation_contributions(utility: Utility, entropy: int, full_score: float, tolerance: float,
                               tasks: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Per task: ``(marginal contributions [n], positions [n], utility queries made)`` along one seeded permutation."""
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
        positions = np.empty(utility.n_train, dtype=np.int64)
        positions[permutation] = np.arange(utility.n_train)
        results.append((contributions, positions, queries))
    return results


class _PermutationAccumulator:
    """Running weighted mean and standard error of per-permutation contributions (for the stopping rule), keeping
    every permutation's raw marginals and positions."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights
        self.n_iterations = 0
        self.n_evaluations = 0
        self.total = np.zeros(len(weights))
        self.total_squares = np.zeros(len(weights))
        self.marginals: list[np.ndarray] = []
        self.positions: list[np.ndarray] = []

    def add(self, results: Sequence[tuple[np.ndarray, np.ndarray, int]]) -> None:
        for marginals, positions, queries in results:
            terms = self.weights[positions] * marginals
            self.total += terms
            self.total_squares += terms**2
            self.marginals.append(marginals)
            self.positions.append(positions)
            self.n_iterations += 1
            self.n_evaluations += queries

    def estimate(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.total / self.n_iterations
        variance = np.maximum(self.total_squares / self.n_iterations - mean**2, 0.0)
        return mean, np.sqrt(variance / max(self.n_iterations - 1, 1))

    def samples(self, extra_evaluations: int = 0) -> PermutationSamples:
        return PermutationSamples(np.stack(self.marginals), np.stack(self.positions),
                                  self.n_evaluations + extra_evaluations)
