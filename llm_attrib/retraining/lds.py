"""The Linear Datamodeling Score's ground truth: random α-subsets → retrained models → measured queries.

1. `sample_subsets` draws ``M`` random subsets, each holding ``round(α · n_train)`` training examples (seeded).
2. `lds_ground_truth` retrains a model on each subset (``seeds_per_subset`` seeds each, averaged) and records
   every query's measurement, through `llm_attrib.retraining.counterfactual.run_trials` (cached, resumable).

`llm_attrib.evaluation.lds.evaluate_lds` scores an attributor against it; AirRep trains on it. The outcomes are
log-probabilities (higher = more likely).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from llm_attrib.errors import UserInputError
from llm_attrib.retraining.counterfactual import Measure, Record, Retrain, run_trials, trial_seeds


def sample_subsets(n_train: int, n_subsets: int, alpha: float = 0.5, seed: int = 0) -> torch.Tensor:
    """``[n_subsets, n_train]`` boolean masks, each with exactly ``round(alpha * n_train)`` True entries."""
    if not 0.0 < alpha < 1.0:
        raise UserInputError(f"alpha must be strictly between 0 and 1, not {alpha}")
    size = round(alpha * n_train)
    if not 0 < size < n_train:
        raise UserInputError(f"alpha={alpha} of {n_train} training examples gives an empty or full subset")
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n_subsets, n_train, dtype=torch.bool)
    for m in range(n_subsets):
        masks[m, torch.randperm(n_train, generator=generator)[:size]] = True
    return masks


@dataclass
class LDSGroundTruth:
    """Measured outcomes of models retrained on random subsets.

    masks:     ``[M, n_train]`` booleans (True = trained on).
    outcomes:  ``[M, n_query]`` measurement (log-probability; higher = more likely), averaged over seeds.
    per_seed:  ``[M, S, n_query]`` the individual measurements.
    query_ids, train_ids: identify the columns of a `Scores` to evaluate.
    """

    masks: torch.Tensor
    outcomes: torch.Tensor
    per_seed: torch.Tensor
    query_ids: list[Any]
    train_ids: list[Any]
    alpha: float
    seed: int


def lds_ground_truth(
    train_records: Sequence[Record],
    query_records: Sequence[Record],
    *,
    retrain: Retrain,
    measure: Measure,
    train_ids: Sequence[Any],
    query_ids: Sequence[Any],
    n_subsets: int = 32,
    alpha: float = 0.5,
    seed: int = 0,
    seeds_per_subset: int = 1,
    cache_dir: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LDSGroundTruth:
    """Retrain on ``n_subsets`` random α-subsets (``seeds_per_subset`` seeds each) and measure the queries.

    ``settings`` must describe the model and training (config, epochs, lr...): it is part of the cache key,
    together with the data fingerprints, α, M, the seeds and the masks.
    """
    masks = sample_subsets(len(train_records), n_subsets, alpha, seed)
    seeds = trial_seeds(seed, n_subsets, seeds_per_subset)
    per_seed = run_trials(
        train_records,
        query_records,
        masks,
        seeds,
        retrain=retrain,
        measure=measure,
        cache_dir=cache_dir,
        settings={"harness": "lds", "alpha": alpha, "n_subsets": n_subsets, "seed": seed, **(settings or {})},
        progress=progress,
    )
    return LDSGroundTruth(
        masks=masks,
        outcomes=per_seed.mean(dim=1),
        per_seed=per_seed,
        query_ids=list(query_ids),
        train_ids=list(train_ids),
        alpha=alpha,
        seed=seed,
    )
