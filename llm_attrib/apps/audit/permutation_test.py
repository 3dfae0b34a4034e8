"""The audit's test: is a protected work's group score larger than random groups of unprotected records give?

Each (output, work) pair is one test of `llm_attrib.significance.group_p_values` (a one-sided permutation test of
the work's summed scores; positive = its records raise the output's log-probability), adjusted for multiple
testing over every pair of the audit (Holm by default); the work is flagged for the output below ``alpha``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import torch

from llm_attrib.errors import UserInputError
from llm_attrib.significance import CORRECTIONS, GroupTest, group_p_values

DEFAULT_ALPHA = 0.01
DEFAULT_CORRECTION = "holm"
DEFAULT_DRAWS = 9999


def chosen_works(works: Sequence[str | None], n_train: int, only: Sequence[str] | None) -> list[str]:
    """The works to test (``only``, else every work), refused when unknown or too large for the unprotected pool."""
    if len(works) != n_train:
        raise UserInputError(f"{len(works)} work labels for {n_train} training records")
    sizes = Counter(w for w in works if w is not None)
    if not sizes:
        raise UserInputError("no protected records: the work column is empty for every training record")
    chosen = list(dict.fromkeys(only)) if only else list(sizes)
    unknown = [name for name in chosen if name not in sizes]
    if unknown:
        known = ", ".join(list(sizes)[:10]) + (", ..." if len(sizes) > 10 else "")
        raise UserInputError(f"unknown work {unknown[0]!r}; the work column names: {known}")
    n_pool = len(works) - sum(sizes.values())
    largest = max(chosen, key=sizes.__getitem__)
    if sizes[largest] > n_pool:
        raise UserInputError(f"work {largest!r} has {sizes[largest]} records but there are only {n_pool} unprotected "
                             "records to draw comparison groups of that size from; audit smaller works (--work)")
    return chosen


def permutation_test(scores: torch.Tensor, works: Sequence[str | None], chosen: Sequence[str], *,
                     correction: str, draws: int, seed: int) -> tuple[GroupTest, torch.Tensor]:
    """The permutation test of each ``chosen`` work against each output, and its adjusted p-values.

    scores: ``[n_output, n_train]``; records not scored (not finite, e.g. outside a prefilter's candidates) count 0.
    Returns ``(test, adjusted)``: ``adjusted`` ``[n_output, n_works]`` by ``correction`` over all the pairs.
    """
    values = torch.where(torch.isfinite(scores), scores, torch.zeros_like(scores))
    test = group_p_values(values, works, draws=draws, seed=seed, only=chosen)
    return test, CORRECTIONS[correction](test.p_values)


def describe_test(*, correction: str, alpha: float, draws: int, seed: int, n_tests: int) -> dict[str, Any]:
    """How the test was run, for a third party to check and re-run it."""
    return {
        "name": "one-sided permutation test of each work's group score against random groups of as many "
                "unprotected records (drawn uniformly without replacement)",
        "p_value": "(1 + #{random group scores >= the work's}) / (1 + draws)",
        "draws": draws,
        "seed": seed,
        "draw_generator": "numpy default_rng([seed, group size]).choice(n_unprotected, size, replace=False)",
        "correction": correction,
        "family": f"all {n_tests} (output, work) pairs of this audit",
        "alpha": alpha,
        "flag": "adjusted p-value < alpha",
    }
