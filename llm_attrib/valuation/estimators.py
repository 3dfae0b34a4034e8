"""Base models by name, for the CLI and `value_dataset`: ``make_estimator("logistic", "classification")``."""

from __future__ import annotations

from typing import Any, Callable

from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from llm_attrib.errors import UserInputError
from llm_attrib.valuation.torch_estimator import TorchEstimator

# name -> task -> factory(random_state)
ESTIMATORS: dict[str, dict[str, Callable[[int | None], Any]]] = {
    "logistic": {"classification": lambda seed: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))},
    "linear": {"regression": lambda seed: make_pipeline(StandardScaler(), LinearRegression())},
    "knn": {"classification": lambda seed: make_pipeline(StandardScaler(), KNeighborsClassifier()),
            "regression": lambda seed: make_pipeline(StandardScaler(), KNeighborsRegressor())},
    "tree": {"classification": lambda seed: DecisionTreeClassifier(max_depth=5, random_state=seed),
             "regression": lambda seed: DecisionTreeRegressor(max_depth=5, random_state=seed)},
    "forest": {"classification": lambda seed: RandomForestClassifier(n_estimators=50, random_state=seed),
               "regression": lambda seed: RandomForestRegressor(n_estimators=50, random_state=seed)},
    "mlp": {task: (lambda seed, task=task: make_pipeline(StandardScaler(), TorchEstimator(task=task,
                                                                                           random_state=seed or 0)))
            for task in ("classification", "regression")},
}


def make_estimator(name: str, task: str, random_state: int | None = None) -> Any:
    """A fresh, unfitted estimator ``name`` for ``task`` (``"classification"`` or ``"regression"``)."""
    if name not in ESTIMATORS:
        raise UserInputError(f"unknown estimator {name!r}: choose one of {', '.join(ESTIMATORS)}")
    if task not in ESTIMATORS[name]:
        raise UserInputError(f"estimator {name!r} does not do {task}: choose one of "
                             + ", ".join(n for n, tasks in ESTIMATORS.items() if task in tasks))
    return ESTIMATORS[name][task](random_state)
