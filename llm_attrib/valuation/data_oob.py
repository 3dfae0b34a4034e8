"""Data-OOB (Kwon & Zou 2023): bag ``B`` weak learners on bootstrap samples and value each point by how well
the learners that did not see it predict it. No validation set needed.

``v_i`` = mean over bags with ``i`` out of bag of: ``1[f_b(x_i) = y_i]`` (classification) or
``−(f_b(x_i) − y_i)²`` (regression). Higher = more valuable; a mislabelled point is predicted wrongly by the
learners trained on the rest, so it scores low. A point never out of bag gets NaN (count 0).

Each bag's learner gets its own ``random_state`` (every ``random_state`` parameter of the clone, nested ones
included), drawn from the bag's seeded stream: a randomised learner (a tree's feature sampling) must not make the
same draws in every bag, or the bags are less independent than bootstrap aggregation assumes (as in a random
forest, where each tree has its own seed). The estimator's own ``random_state`` is therefore overridden.
"""

from __future__ import annotations

from functools import partial
from numbers import Integral
from typing import Any, Callable

import numpy as np
from sklearn.base import clone, is_classifier

from llm_attrib.valuation.base import AT_LEAST_ONE, POSITIVE, Valuation
from llm_attrib.valuation.parallel import parallel_map, root_entropy, split_evenly, task_rng
from llm_attrib.valuation.result import ValuationResult

OutOfBagScore = Callable[[np.ndarray, np.ndarray], np.ndarray]

OUT_OF_BAG_SCORES: dict[bool, OutOfBagScore] = {  # keyed by is_classifier(estimator)
    True: lambda predicted, y: (predicted == y).astype(float),
    False: lambda predicted, y: -((predicted - y) ** 2),
}


def out_of_bag_values(estimator: Any, X: np.ndarray, y: np.ndarray, in_bag_counts: np.ndarray,
                      n_jobs: int | None = None, seeds: np.ndarray | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, stderr, counts)`` float/float/int ``[n]`` for bags given as ``in_bag_counts`` int ``[B, n]``
    (how often each point is drawn into each bag). Bag ``b`` trains ``clone(estimator)`` on its draws, with
    ``random_state = seeds[b]`` where given (`seeded_clone`)."""
    chunks = split_evenly(range(len(in_bag_counts)), 4 * max(1, n_jobs or 1))
    fit_bags = partial(_out_of_bag_scores, estimator, X, y)
    bag_seeds = [None] * len(in_bag_counts) if seeds is None else list(seeds)
    bag_scores = np.concatenate(parallel_map(
        fit_bags, [(in_bag_counts[chunk], [bag_seeds[b] for b in chunk]) for chunk in chunks], n_jobs))
    out_of_bag = in_bag_counts == 0
    counts = out_of_bag.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(out_of_bag, bag_scores, 0.0).sum(axis=0) / counts
        squares = np.where(out_of_bag, bag_scores**2, 0.0).sum(axis=0) / counts
        stderr = np.sqrt(np.maximum(squares - values**2, 0.0) / np.maximum(counts - 1, 1))
    return values, np.where(counts > 0, stderr, np.nan), counts


def seeded_clone(estimator: Any, seed: int | None) -> Any:
    """``clone(estimator)`` with every ``random_state`` parameter (``random_state``, ``step__random_state`` …) set
    to ``seed``; a plain clone for ``seed=None`` or an estimator without one."""
    model = clone(estimator)
    if seed is not None:
        names = [name for name in model.get_params() if name == "random_state" or name.endswith("__random_state")]
        model.set_params(**dict.fromkeys(names, int(seed)))
    return model


def _out_of_bag_scores(estimator: Any, X: np.ndarray, y: np.ndarray, in_bag_counts: np.ndarray,
                       seeds: list[int | None]) -> np.ndarray:
    """Float ``[bags, n]``: each bag's learner (seeded with ``seeds[bag]``) scored on its out-of-bag points (0 where
    in bag)."""
    score = OUT_OF_BAG_SCORES[is_classifier(estimator)]
    scores = np.zeros(in_bag_counts.shape)
    for bag, counts in enumerate(in_bag_counts):
        drawn = np.repeat(np.arange(len(y)), counts)
        out = counts == 0
        if out.any():
            model = seeded_clone(estimator, seeds[bag]).fit(X[drawn], y[drawn])
            scores[bag, out] = score(model.predict(X[out]), y[out])
    return scores


class DataOOB(Valuation):
    """Data-OOB with ``n_estimators`` bootstrap bags of ``max_samples · n`` draws each (with replacement)."""

    method_name = "data-oob"
    needs_validation = False
    _parameter_constraints = {"n_estimators": [AT_LEAST_ONE], "max_samples": [POSITIVE], "n_jobs": [None, Integral]}

    def __init__(self, estimator: Any, n_estimators: int = 100, max_samples: float = 1.0,
                 n_jobs: int | None = None, random_state: int | None = None) -> None:
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _value(self, X_train, y_train, X_val, y_val) -> ValuationResult:
        n = len(y_train)
        entropy = root_entropy(self.random_state)
        draws = max(1, int(round(self.max_samples * n)))
        streams = [task_rng(entropy, bag) for bag in range(self.n_estimators)]
        in_bag_counts = np.stack([np.bincount(rng.integers(0, n, draws), minlength=n) for rng in streams])
        seeds = np.array([rng.integers(2**31 - 1) for rng in streams])  # after the draws: the bags are unchanged
        values, stderr, counts = out_of_bag_values(self.estimator, X_train, y_train, in_bag_counts, self.n_jobs,
                                                   seeds)
        return ValuationResult(values, stderr, counts, self.method_name, self.n_estimators)
