"""Data valuation for smaller models, scikit-learn style: ``Method(estimator=...).fit(X_train, y_train, X_val,
y_val)``, then ``.values_`` (float ``[n_train]``) or ``.result_`` (a `ValuationResult`).

Sign: a **higher value means a more valuable training point**; mislabelled or harmful points score low.

Methods (``VALUATION_METHODS`` by name): leave-one-out, TMC Data Shapley, Beta Shapley (weighted permutations,
or maximum sample reuse), Data Banzhaf (maximum sample reuse), KNN-Shapley (closed form), DVRL, Data-OOB. Any
scikit-learn classifier or regressor is a base model (cloned per fit); `TorchEstimator` wraps a torch module.
``n_jobs`` runs samples in parallel with joblib, and ``with joblib.parallel_backend("ray"):`` (or ``"dask"``)
around ``fit`` sends them to a cluster; ``random_state`` makes every result reproducible, whatever ``n_jobs``.

Names are imported on first use, so that joblib workers (which import the modules they run) do not pay
for torch and transformers when they only fit scikit-learn models.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {  # public name -> module under llm_attrib.valuation
    "DataBanzhaf": "banzhaf",
    "Valuation": "base",
    "BetaShapley": "beta_shapley",
    "DataOOB": "data_oob", "out_of_bag_values": "data_oob",
    "TMCShapley": "data_shapley",
    "DVRL": "dvrl",
    "ESTIMATORS": "estimators", "make_estimator": "estimators",
    "exact_banzhaf": "exact", "exact_semivalue": "exact", "exact_shapley": "exact",
    "KNNShapley": "knn_shapley", "knn_utility": "knn_shapley",
    "LeaveOneOut": "loo",
    "SampledUtilities": "msr", "estimate_semivalue": "msr",
    "VALUATION_METHODS": "registry", "make_method": "registry",
    "SEMIVALUE_SAMPLERS": "semivalue", "Semivalue": "semivalue",
    "ValuationResult": "result",
    "banzhaf_log_weight": "semivalue_weights", "beta_log_weight": "semivalue_weights",
    "shapley_log_weight": "semivalue_weights",
    "MaxIterations": "stopping", "MaxUtilityEvaluations": "stopping", "MinIterations": "stopping",
    "RelativeChange": "stopping", "StandardErrorBelow": "stopping", "StoppingCriterion": "stopping",
    "embed_texts": "text", "value_dataset": "text",
    "TorchEstimator": "torch_estimator",
    "Utility": "utility",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return __all__
