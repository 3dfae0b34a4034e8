"""Composable stopping criteria for sampling-based methods (TMC Shapley, MSR Beta Shapley / Banzhaf).

A criterion looks at the `SamplingState` after each round of samples and says whether to stop.
Combine them: ``MaxUtilityEvaluations(5000) | (RelativeChange(0.01) & MinIterations(100))`` stops at the
budget, or earlier once values have settled after at least 100 samples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingState:
    """Where sampling stands: samples drawn (permutations or subsets), utility queries, current and previous
    estimates (float ``[n]``; no previous one after the first round), and their standard errors."""

    n_iterations: int
    n_evaluations: int
    values: np.ndarray
    previous_values: np.ndarray | None
    stderr: np.ndarray


class StoppingCriterion(ABC):
    """``criterion(state) -> True`` to stop. ``a | b`` stops when either does, ``a & b`` when both do."""

    @abstractmethod
    def __call__(self, state: SamplingState) -> bool: ...

    def __or__(self, other: "StoppingCriterion") -> "StoppingCriterion":
        return AnyOf(self, other)

    def __and__(self, other: "StoppingCriterion") -> "StoppingCriterion":
        return AllOf(self, other)

    def budget(self) -> int | None:
        """Most samples this criterion allows, if it caps them (used to size progress bars)."""
        return None


@dataclass(frozen=True)
class AnyOf(StoppingCriterion):
    first: StoppingCriterion
    second: StoppingCriterion

    def __call__(self, state: SamplingState) -> bool:
        return self.first(state) or self.second(state)

    def budget(self) -> int | None:
        budgets = [b for b in (self.first.budget(), self.second.budget()) if b is not None]
        return min(budgets) if budgets else None


@dataclass(frozen=True)
class AllOf(StoppingCriterion):
    first: StoppingCriterion
    second: StoppingCriterion

    def __call__(self, state: SamplingState) -> bool:
        return self.first(state) and self.second(state)


@dataclass(frozen=True)
class MaxIterations(StoppingCriterion):
    """Stop after ``n`` samples (permutations for TMC, subsets for MSR)."""

    n: int

    def __call__(self, state: SamplingState) -> bool:
        return state.n_iterations >= self.n

    def budget(self) -> int | None:
        return self.n


@dataclass(frozen=True)
class MinIterations(StoppingCriterion):
    """True once ``n`` samples are drawn: combine with ``&`` to stop no earlier than that."""

    n: int

    def __call__(self, state: SamplingState) -> bool:
        return state.n_iterations >= self.n


@dataclass(frozen=True)
class MaxUtilityEvaluations(StoppingCriterion):
    """Stop once the utility has been queried ``n`` times (train-and-score calls, cached or not)."""

    n: int

    def __call__(self, state: SamplingState) -> bool:
        return state.n_evaluations >= self.n


@dataclass(frozen=True)
class RelativeChange(StoppingCriterion):
    """Stop when ``max_i |v_i − v_i'| / max(|v_i|, eps) < tolerance`` between consecutive rounds."""

    tolerance: float = 0.01
    eps: float = 1e-8

    def __call__(self, state: SamplingState) -> bool:
        if state.previous_values is None:
            return False
        change = np.abs(state.values - state.previous_values) / np.maximum(np.abs(state.values), self.eps)
        return bool(np.max(change, initial=0.0) < self.tolerance)


@dataclass(frozen=True)
class StandardErrorBelow(StoppingCriterion):
    """Stop when every value's standard error is below ``threshold``."""

    threshold: float

    def __call__(self, state: SamplingState) -> bool:
        return bool(np.all(state.stderr < self.threshold))
