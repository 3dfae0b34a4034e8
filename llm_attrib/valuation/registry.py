"""Valuation methods by name (the names the CLI and `value_dataset` accept)."""

from __future__ import annotations

import inspect
from typing import Any

from llm_attrib.errors import UserInputError
from llm_attrib.valuation.banzhaf import DataBanzhaf
from llm_attrib.valuation.base import Valuation
from llm_attrib.valuation.beta_shapley import BetaShapley
from llm_attrib.valuation.data_oob import DataOOB
from llm_attrib.valuation.data_shapley import TMCShapley
from llm_attrib.valuation.dvrl import DVRL
from llm_attrib.valuation.knn_shapley import KNNShapley
from llm_attrib.valuation.loo import LeaveOneOut

VALUATION_METHODS: dict[str, type[Valuation]] = {
    method.method_name: method
    for method in (LeaveOneOut, TMCShapley, BetaShapley, DataBanzhaf, KNNShapley, DVRL, DataOOB)
}


def make_method(name: str, shared: dict[str, Any] | None = None, **params: Any) -> Valuation:
    """``VALUATION_METHODS[name]`` built with ``params`` (each must be one of its parameters) and those of
    ``shared`` that it takes (options such as ``estimator``, ``random_state``, ``n_jobs`` that only some
    methods have)."""
    if name not in VALUATION_METHODS:
        raise UserInputError(f"unknown valuation method {name!r}: choose one of {', '.join(VALUATION_METHODS)}")
    method = VALUATION_METHODS[name]
    accepted = inspect.signature(method).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise UserInputError(f"{name} has no parameter {unknown[0]!r}; it takes {', '.join(accepted)}")
    return method(**{key: value for key, value in (shared or {}).items() if key in accepted}, **params)
