"""Is a group of training records' summed score larger than chance? A permutation test and multiple-testing corrections.

`permutation_p_values` compares each group's score sum (e.g. a protected work's records, summed by
`group_scores`; positive = the group raises the query's log-probability) with the sums of ``draws`` random groups
of the same size drawn, each uniformly and without replacement, from a *pool* of comparison records (e.g. the
unprotected ones). One-sided: the alternative is that the group raises the query more than a random group would. The p-value carries the add-one correction of Monte-Carlo tests (Phipson & Smyth
2010), ``p = (1 + #{random sums ≥ observed}) / (1 + draws)``, so it is never 0 and is valid for any number of draws.
`group_p_values` does both from a score matrix and one group label per record (``None`` = in the pool).

`CORRECTIONS` adjusts a family of p-values for multiple testing: a hypothesis is rejected when its adjusted
p-value is below ``alpha``. ``bonferroni`` and ``holm`` control the family-wise error rate (the chance of any false
rejection) under any dependence between the tests; ``bh`` (Benjamini–Hochberg) controls the false discovery rate
(the expected share of false rejections among the rejections) for independent or positively dependent tests.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np
import torch

from llm_attrib.errors import UserInputError

DRAWS_PER_BLOCK_ELEMENTS = 1 << 22
"""Random groups are summed in blocks of about this many ``draw × record`` indices, bounding memory."""


def random_group_sums(pool: torch.Tensor, size: int, draws: int, seed: int) -> torch.Tensor:
    """``[n_query, draws]``: sums of ``pool`` ``[n_query, n_pool]`` over ``draws`` random ``size``-subsets of columns.

    Each subset is drawn uniformly without replacement, independently of the others, from a generator seeded by
    ``(seed, size)``: a group's null distribution does not depend on which other groups are tested.
    """
    n_pool = pool.shape[1]
    if not 1 <= size <= n_pool:
        raise UserInputError(f"a group of {size} records cannot be compared with random groups of a pool of "
                             f"{n_pool} records; the pool must hold at least as many records as the group")
    rng = np.random.default_rng([seed, size])
    subsets = np.stack([rng.choice(n_pool, size, replace=False) for _ in range(draws)])
    block = max(1, DRAWS_PER_BLOCK_ELEMENTS // size)
    values = pool.double()
    return torch.cat([values[:, torch.from_numpy(subsets[i : i + block])].sum(dim=-1)
                      for i in range(0, draws, block)], dim=1)


def permutation_p_values(
    observed: torch.Tensor, sizes: Sequence[int], pool: torch.Tensor, *, draws: int, seed: int
) -> torch.Tensor:
    """One-sided p-values ``[n_query, n_groups]`` that each group's sum is no larger than a random group's.

    observed: ``[n_query, n_groups]`` score sums of the groups tested; sizes: each group's number of records;
    pool: ``[n_query, n_pool]`` scores of the comparison records (disjoint from the groups). Groups of the same size
    share their random groups. ``p = (1 + #{random sums ≥ observed}) / (1 + draws)``.
    """
    if draws < 1:
        raise UserInputError(f"the number of random groups must be at least 1, not {draws}")
    if observed.shape != (pool.shape[0], len(sizes)):
        raise ValueError(f"observed has shape {tuple(observed.shape)}; expected ({pool.shape[0]}, {len(sizes)})")
    p_values = torch.empty(observed.shape, dtype=torch.float64)
    for size in sorted(set(sizes)):
        columns = [g for g, s in enumerate(sizes) if s == size]
        null = random_group_sums(pool, size, draws, seed)  # [n_query, draws]
        exceed = (null[:, None, :] >= observed[:, columns, None].double()).sum(dim=-1)
        p_values[:, columns] = (1 + exceed).double() / (1 + draws)
    return p_values


def group_scores(scores: torch.Tensor, groups: Sequence[Hashable | None]) -> tuple[torch.Tensor, list[Hashable]]:
    """Sum ``scores`` ``[n_query, n_train]`` over the training columns of each group.

    groups: one label per training column (``None`` = belongs to no group, e.g. unrelated filler text).
    Returns ``([n_query, n_groups], group labels in order of first appearance)``. Positive = the group's
    documents together raise the query's log-probability (under the additive reading of the scores).
    """
    if len(groups) != scores.shape[1]:
        raise UserInputError(f"{len(groups)} group labels for {scores.shape[1]} training columns")
    labels = list(dict.fromkeys(g for g in groups if g is not None))
    position = {label: i for i, label in enumerate(labels)}
    membership = torch.zeros(scores.shape[1], len(labels), dtype=scores.dtype)
    for column, group in enumerate(groups):
        if group is not None:
            membership[column, position[group]] = 1
    return scores @ membership, labels


@dataclass
class GroupTest:
    """Each tested group's score sum and permutation p-value against random groups of ungrouped records.

    labels: the groups tested; sizes: their numbers of records; scores and p_values: ``[n_query, n_groups]``
    (positive score = the group's records together raise the query's log-probability; small p = larger than
    random groups of the same size are). ``n_pool``: the ungrouped records the random groups were drawn from.
    """

    labels: list[Hashable]
    sizes: list[int]
    scores: torch.Tensor
    p_values: torch.Tensor
    n_pool: int


def group_p_values(scores: torch.Tensor, groups: Sequence[Hashable | None], *, draws: int, seed: int,
                   only: Sequence[Hashable] | None = None) -> GroupTest:
    """Sum ``scores`` ``[n_query, n_train]`` per group and test each sum against ``draws`` random groups of the same
    size drawn from the columns whose group is ``None`` (`permutation_p_values`, seeded by ``seed``).

    ``only``: test just these groups (default: every group); the other groups' columns are in no test and not in the
    pool. Scores must be finite.
    """
    if not torch.isfinite(scores).all():
        raise UserInputError("the scores hold NaN or infinite values; a group test needs every record scored")
    pool = [column for column, group in enumerate(groups) if group is None]
    tested = {g for g in groups if g is not None} if only is None else set(only)
    grouped, labels = group_scores(scores, [g if g in tested else None for g in groups])
    counts = Counter(groups)
    sizes = [counts[label] for label in labels]
    p_values = permutation_p_values(grouped, sizes, scores[:, pool], draws=draws, seed=seed)
    return GroupTest(labels=labels, sizes=sizes, scores=grouped, p_values=p_values, n_pool=len(pool))


def smallest_p_value(draws: int) -> float:
    """The smallest p-value `permutation_p_values` can return with ``draws`` random groups."""
    return 1 / (1 + draws)


def bonferroni(p_values: torch.Tensor) -> torch.Tensor:
    """``min(1, m·p)`` over a flat family of ``m`` p-values (family-wise error rate, any dependence)."""
    return (p_values.double() * p_values.numel()).clamp(max=1)


def holm(p_values: torch.Tensor) -> torch.Tensor:
    """Holm's step-down adjustment of a flat family of ``m`` p-values (family-wise error rate, any dependence;
    never larger than Bonferroni's): the ``i``-th smallest becomes ``max_{j ≤ i} min(1, (m − j + 1)·p_(j))``."""
    p = p_values.double().flatten()
    order = torch.argsort(p)
    m = p.numel()
    scaled = (p[order] * torch.arange(m, 0, -1, dtype=torch.float64)).clamp(max=1)
    adjusted = torch.empty_like(p)
    adjusted[order] = torch.cummax(scaled, dim=0).values
    return adjusted.reshape(p_values.shape)


def benjamini_hochberg(p_values: torch.Tensor) -> torch.Tensor:
    """Benjamini–Hochberg adjustment of a flat family of ``m`` p-values (false discovery rate): the ``i``-th
    smallest becomes ``min_{j ≥ i} min(1, m·p_(j) / j)``."""
    p = p_values.double().flatten()
    order = torch.argsort(p)
    m = p.numel()
    scaled = (p[order] * m / torch.arange(1, m + 1, dtype=torch.float64)).clamp(max=1)
    adjusted = torch.empty_like(p)
    adjusted[order] = torch.flip(torch.cummin(torch.flip(scaled, [0]), dim=0).values, [0])
    return adjusted.reshape(p_values.shape)


Correction = Callable[[torch.Tensor], torch.Tensor]
CORRECTIONS: dict[str, Correction] = {"holm": holm, "bonferroni": bonferroni, "bh": benjamini_hochberg}
"""Multiple-testing adjustments by name: ``adjust(p_values) -> adjusted p-values`` of the same shape, treating
every entry as one test of a single family."""


def require_reachable(correction: str, n_tests: int, draws: int, alpha: float) -> None:
    """Refuse settings under which even a lone test at the smallest p-value cannot reach ``alpha`` after correction."""
    if correction not in CORRECTIONS:
        raise UserInputError(f"unknown correction {correction!r}; choose one of {', '.join(CORRECTIONS)}")
    if not 0 < alpha < 1:
        raise UserInputError(f"alpha must be between 0 and 1, not {alpha}")
    best = torch.ones(n_tests, dtype=torch.float64)
    best[0] = smallest_p_value(draws)
    if float(CORRECTIONS[correction](best)[0]) >= alpha:
        raise UserInputError(f"with {draws} random groups the smallest p-value is 1/{draws + 1}, which the "
                             f"{correction} correction over {n_tests} tests cannot bring below alpha={alpha}; "
                             f"use at least {int(n_tests / alpha) + 1} draws")
