"""`Valuation`: the scikit-learn-style base of every method: ``Method(...).fit(X_train, y_train, X_val, y_val)``,
then ``.values_`` (float ``[n_train]``, higher = more valuable) and ``.result_`` (a `ValuationResult`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import Interval, InvalidParameterError
from sklearn.utils.validation import check_X_y

from llm_attrib.errors import UserInputError
from llm_attrib.valuation.result import ValuationResult
from llm_attrib.valuation.utility import Scorer, Utility

AT_LEAST_ONE = Interval(Integral, 1, None, closed="left")
NON_NEGATIVE = Interval(Real, 0, None, closed="left")
POSITIVE = Interval(Real, 0, None, closed="neither")


class Valuation(BaseEstimator, ABC):
    """Base of all valuation methods. Subclasses implement `_value` and declare what their parameters allow in
    ``_parameter_constraints`` (scikit-learn's), checked when `fit` starts."""

    method_name: ClassVar[str]
    needs_validation: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}

    def fit(
        self,
        X_train: Any,
        y_train: Any,
        X_val: Any | None = None,
        y_val: Any | None = None,
    ) -> "Valuation":
        """Value each of the ``n_train`` rows of ``X_train`` (float features ``[n_train, d]``)."""
        try:
            self._validate_params()
        except InvalidParameterError as error:
            raise UserInputError(f"{self.method_name}: {error}") from None
        X_train, y_train = _check_data(X_train, y_train, "training")
        if X_val is None or y_val is None:
            if self.needs_validation:
                raise UserInputError(f"{self.method_name} needs validation data: pass X_val and y_val")
        else:
            X_val, y_val = _check_data(X_val, y_val, "validation")
            if X_val.shape[1] != X_train.shape[1]:
                raise UserInputError(
                    f"validation data has {X_val.shape[1]} features, training data has {X_train.shape[1]}")
        self.result_ = self._value(X_train, y_train, X_val, y_val)
        return self

    @property
    def values_(self) -> np.ndarray:
        """Float ``[n_train]``: higher = more valuable."""
        return self.result_.values

    @abstractmethod
    def _value(self, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray | None,
               y_val: np.ndarray | None) -> ValuationResult: ...


class UtilityValuation(Valuation):
    """Methods that value points through a `Utility` (train on a subset, score on validation data).

    Subclasses take ``estimator``, ``scorer`` and ``default_score`` parameters.
    """

    estimator: Any
    scorer: Any
    default_score: float
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"default_score": [Real], "n_jobs": [None, Integral]}

    def make_utility(self, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                     cache: bool = True, default_scorer: str | Scorer | None = None) -> Utility:
        """The `Utility` of this method's estimator; ``default_scorer`` applies when ``self.scorer`` is None."""
        return Utility(clone(self.estimator), X_train, y_train, X_val, y_val,
                       scorer=self.scorer if self.scorer is not None else default_scorer,
                       default_score=self.default_score, cache=cache)


def _check_data(X: Any, y: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return check_X_y(X, y, dtype="numeric", y_numeric=False)
    except ValueError as error:
        raise UserInputError(f"bad {name} data: {str(error).splitlines()[0]}") from error
