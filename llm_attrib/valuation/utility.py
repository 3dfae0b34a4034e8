"""`Utility`: train a fresh copy of a model on a subset of the training data and score it on validation data.

``U(S)`` is the quantity every subset-based method (leave-one-out, TMC Shapley, Beta Shapley, Banzhaf, DVRL)
values points against: higher = better model. Results are cached by subset.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.metrics import get_scorer

Scorer = Callable[[Any, np.ndarray, np.ndarray], float]


def log_likelihood(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    """Mean ``log p(y | x)`` of a fitted classifier (higher = better). Unlike sklearn's ``neg_log_loss`` it
    accepts labels the model never saw (probability floored at ``1e-3``), as models fitted on subsets do."""
    probabilities = np.concatenate([np.clip(model.predict_proba(X), 1e-3, 1.0), np.full((len(y), 1), 1e-3)], axis=1)
    column = {label: j for j, label in enumerate(model.classes_)}
    unseen = len(model.classes_)
    columns = np.array([column.get(label, unseen) for label in y])
    return float(np.mean(np.log(probabilities[np.arange(len(y)), columns])))


SCORERS: dict[str, Scorer] = {"log_likelihood": log_likelihood}


def resolve_scorer(scorer: str | Scorer | None, estimator: Any) -> Scorer:
    """A callable ``(fitted_estimator, X, y) -> float`` (higher = better).

    ``None`` means accuracy for classifiers and negative mean squared error for regressors; a string is a
    key of `SCORERS` (``"log_likelihood"``) or any scikit-learn scorer name (``"accuracy"``, ``"f1"``, ...).
    """
    if scorer is None:
        scorer = "accuracy" if is_classifier(estimator) else "neg_mean_squared_error"
    if isinstance(scorer, str):
        return SCORERS[scorer] if scorer in SCORERS else get_scorer(scorer)
    return scorer


class Utility:
    """``U(S)``: score on ``(X_val, y_val)`` of ``clone(estimator)`` fitted on training points ``S``.

    Empty subsets, and for classifiers subsets with a single class, are degenerate: they score
    ``default_score`` without fitting. Calls are cached by subset (order does not matter) unless
    ``cache=False``; ``n_fits`` counts models actually trained.
    """

    def __init__(
        self,
        estimator: Any,
        X_train: np.ndarray,
        y_train: np.ndarray,
        X_val: np.ndarray,
        y_val: np.ndarray,
        scorer: str | Scorer | None = None,
        default_score: float = 0.0,
        cache: bool = True,
    ) -> None:
        self.estimator = estimator
        self.X_train, self.y_train = np.asarray(X_train), np.asarray(y_train)
        self.X_val, self.y_val = np.asarray(X_val), np.asarray(y_val)
        self.scorer = resolve_scorer(scorer, estimator)
        self.default_score = float(default_score)
        self.cache: dict[bytes, float] | None = {} if cache else None
        self.is_classifier = is_classifier(estimator)
        self.n_fits = 0

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    def __call__(self, indices: Sequence[int] | np.ndarray) -> float:
        subset = np.unique(np.asarray(indices, dtype=np.int64))
        if self.cache is None:
            return self._score(subset)
        key = subset.tobytes()
        if key not in self.cache:
            self.cache[key] = self._score(subset)
        return self.cache[key]

    def _score(self, subset: np.ndarray) -> float:
        y = self.y_train[subset]
        if len(subset) == 0 or (self.is_classifier and len(np.unique(y)) < 2):
            return self.default_score
        model = clone(self.estimator).fit(self.X_train[subset], y)
        self.n_fits += 1
        return float(self.scorer(model, self.X_val, self.y_val))

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes start with an empty cache: shipping it would cost more than it saves.
        state = dict(self.__dict__)
        state["cache"] = {} if self.cache is not None else None
        return state
