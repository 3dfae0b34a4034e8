"""Leave-one-out ground truth on small models, and how well attributions predict it.

The actual effect of training example ``i`` on query ``q`` is
``measurement(trained on all) - measurement(trained on all but i)``, averaged over the same seeds for both
sides (paired seeds cancel most of the initialisation noise). Positive = the example raises the query's
log-probability, the same sign as the library's scores, so a good attributor correlates positively.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from llm_attrib.errors import UserInputError
from llm_attrib.evaluation.metrics import CorrelationSummary, loo_correlation
from llm_attrib.retraining.counterfactual import Measure, Record, Retrain, run_trials, trial_seeds
from llm_attrib.scores import Scores


@dataclass
class LOOGroundTruth:
    """effects: ``[n_query, n_removed]`` measured LOO effects (positive = the example raises the measurement);
    removed: ``[n_removed]`` training indices that were left out, one at a time."""

    effects: torch.Tensor
    removed: torch.Tensor
    query_ids: list[Any]
    train_ids: list[Any]


def loo_masks(n_train: int, removed: torch.Tensor) -> torch.Tensor:
    """``[1 + n_removed, n_train]``: row 0 keeps everything, row ``1 + r`` drops ``removed[r]``."""
    masks = torch.ones(1 + len(removed), n_train, dtype=torch.bool)
    masks[torch.arange(1, 1 + len(removed)), removed] = False
    return masks


def loo_ground_truth(
    train_records: Sequence[Record],
    query_records: Sequence[Record],
    *,
    retrain: Retrain,
    measure: Measure,
    train_ids: Sequence[Any],
    query_ids: Sequence[Any],
    n_removed: int | None = None,
    seed: int = 0,
    seeds_per_model: int = 1,
    cache_dir: str | Path | None = None,
    settings: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LOOGroundTruth:
    """Retrain without each of ``n_removed`` training examples (all if None; else a seeded random choice)."""
    n_train = len(train_records)
    if n_removed is None or n_removed >= n_train:
        removed = torch.arange(n_train)
    elif n_removed < 1:
        raise UserInputError(f"n_removed must be at least 1, not {n_removed}")
    else:
        removed = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:n_removed].sort().values
    masks = loo_masks(n_train, removed)
    seeds = trial_seeds(seed, 1, seeds_per_model).expand(masks.shape[0], -1)
    per_seed = run_trials(
        train_records,
        query_records,
        masks,
        seeds.contiguous(),
        retrain=retrain,
        measure=measure,
        cache_dir=cache_dir,
        settings={"harness": "loo", "seed": seed, **(settings or {})},
        progress=progress,
    )
    outcomes = per_seed.mean(dim=1)  # [1 + n_removed, n_query]
    return LOOGroundTruth(
        effects=(outcomes[0:1] - outcomes[1:]).T.contiguous(),
        removed=removed,
        query_ids=list(query_ids),
        train_ids=list(train_ids),
    )


def evaluate_loo(scores: Scores, truth: LOOGroundTruth, method: str = "pearson") -> CorrelationSummary:
    """Per-query correlation between ``scores`` of the removed examples and their measured LOO effects."""
    if list(scores.query_ids) != truth.query_ids or list(scores.train_ids) != truth.train_ids:
        raise UserInputError("the scores and the LOO ground truth are for different queries or training examples")
    return loo_correlation(scores.values[:, truth.removed], truth.effects, method)
