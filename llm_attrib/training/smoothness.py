"""Metasmoothness: does the replayed training move a query's outcome linearly in the record weights?

MAGIC's scores are exact derivatives; they predict finite changes (leaving records out, an LDS) only as far as the
outcome ``f(w) = log Pr(completion | prompt; θ_T(w))`` is close to linear over such changes (bergson calls this
metasmoothness; Adam's first steps, large learning rates and few steps make it rough). Along ``D`` random directions
``δ_d`` (a random subset of ``fraction`` of the records, 1 there and 0 elsewhere) the run is replayed at
``w ± scale·δ_d`` (``scale=1``: the subset removed, and doubled) and compared with the metagradient's prediction
``± scale·⟨δ_d, ∇_w f⟩``:

- ``removal_error`` = ‖Δ₋ − (−p)‖ / ‖Δ₋‖ over directions and queries: how far the first-order prediction of the
  removal misses (0 = exact);
- ``linearity`` = 1 − Σ|Δ₊ + Δ₋| / Σ(|Δ₊| + |Δ₋|): 1 when the outcome is odd (linear) along each line, 0 when the
  two sides move alike;
- ``correlation`` of the predicted and actual removal effects over all (direction, query) pairs.

``smooth`` is ``removal_error ≤ tolerance``: trust the scores for leave-``fraction``-out predictions only then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from llm_attrib.data import Batch
from llm_attrib.training.run import ReplayableRun
from llm_attrib.training.step import log_probs


@dataclass
class Smoothness:
    """Replayed and predicted changes ``[D, Q]`` (``plus``: ``w + scale·δ``, ``minus``: ``w − scale·δ``,
    ``predicted``: ``scale·⟨δ, ∇_w f⟩``) and the summaries of the module docstring."""

    plus: torch.Tensor
    minus: torch.Tensor
    predicted: torch.Tensor
    fraction: float
    scale: float
    tolerance: float

    @property
    def removal_error(self) -> float:
        return float((self.minus + self.predicted).norm() / self.minus.norm().clamp_min(1e-300))

    @property
    def linearity(self) -> float:
        total = (self.plus.abs() + self.minus.abs()).sum().clamp_min(1e-300)
        return float(1.0 - (self.plus + self.minus).abs().sum() / total)

    @property
    def correlation(self) -> float:
        actual, predicted = -self.minus.reshape(-1), self.predicted.reshape(-1)
        if actual.numel() < 2:
            return float("nan")
        return float(torch.corrcoef(torch.stack([actual, predicted]))[0, 1])

    @property
    def smooth(self) -> bool:
        return self.removal_error <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {"smooth": self.smooth, "removal_error": self.removal_error, "linearity": self.linearity,
                "correlation": self.correlation, "directions": int(self.plus.shape[0]), "fraction": self.fraction,
                "scale": self.scale, "tolerance": self.tolerance}

    def summary(self) -> str:
        verdict = "smooth" if self.smooth else "NOT smooth: do not trust the scores' leave-out predictions"
        return (f"metasmoothness ({self.plus.shape[0]} directions, {self.fraction:.0%} of records x {self.scale:g}): "
                f"{verdict}; removal predicted to {self.removal_error:.1%} error (tolerance {self.tolerance:.0%}), "
                f"linearity {self.linearity:.3f}, correlation {self.correlation:.3f}")


def random_subsets(n_records: int, count: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """``[count, n_records]`` float64 0/1 rows, each with ``max(1, round(fraction · n))`` random ones."""
    generator = torch.Generator().manual_seed(seed)
    k = max(1, round(fraction * n_records))
    rows = torch.zeros(count, n_records, dtype=torch.float64)
    for row in rows:
        row[torch.randperm(n_records, generator=generator)[:k]] = 1.0
    return rows


def outcome(run: ReplayableRun, queries: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``[Q]`` float64 ``f(q)`` at the end of the run replayed with ``weights`` (None: the recorded end)."""
    state = run.state(run.total_steps) if weights is None else run.replay(weights, check=False)
    with torch.no_grad():
        return log_probs(run.model, state.params, queries).double()


def metasmoothness(run: ReplayableRun, queries: Batch, scores: torch.Tensor, *, directions: int = 4,
                   fraction: float = 0.05, scale: float = 1.0, tolerance: float = 0.3, seed: int = 0) -> Smoothness:
    """`Smoothness` of ``queries`` (a batch, ``Q`` rows) whose MAGIC ``scores`` ``[Q, n_records]`` are given, along
    ``directions`` random subsets; ``2 × directions`` replays of the run."""
    rows = random_subsets(len(run.encoded), directions, fraction, seed)
    base = outcome(run, queries)
    recorded = run.weights.double()
    plus = torch.stack([outcome(run, queries, recorded + scale * row) - base for row in rows])
    minus = torch.stack([outcome(run, queries, recorded - scale * row) - base for row in rows])
    predicted = scale * rows @ scores.double().T
    return Smoothness(plus, minus, predicted, fraction, scale, tolerance)

