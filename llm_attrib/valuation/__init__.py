"""Data valuation for smaller models, scikit-learn style: ``Method(estimator=...).fit(X_train, y_train, X_val,
y_val)``, then ``.values_`` (float ``[n_train]``) or ``.result_`` (a `ValuationResult`).

Sign: a **higher value means a more valuable training point**; mislabelled or harmful points score low.

Methods (``VALUATION_METHODS`` by name): leave-one-out, TMC Data Shapley, Beta Shapley and Data Banzhaf
(maximum sample reuse), KNN-Shapley (closed form), DVRL, Data-OOB. Any scikit-learn classifier or regressor
is a base model (cloned per fit); `TorchEstimator` wraps a torch module. ``n_jobs`` runs samples in parallel
with joblib, and ``with joblib.parallel_backend("ray"):`` (or ``"dask"``) around ``fit`` sends them to a
cluster; ``random_state`` makes every result reproducible, whatever ``n_jobs``.
"""

from llm_attrib.valuation.banzhaf import DataBanzhaf
from llm_attrib.valuation.base import Valuation
from llm_attrib.valuation.beta_shapley import BetaShapley
from llm_attrib.valuation.data_oob import DataOOB, out_of_bag_values
from llm_attrib.valuation.data_shapley import TMCShapley
from llm_attrib.valuation.dvrl import DVRL
from llm_attrib.valuation.estimators import ESTIMATORS, make_estimator
from llm_attrib.valuation.exact import exact_banzhaf, exact_semivalue, exact_shapley
from llm_attrib.valuation.knn_shapley import KNNShapley, knn_utility
from llm_attrib.valuation.loo import LeaveOneOut
from llm_attrib.valuation.msr import SampledUtilities, estimate_semivalue
from llm_attrib.valuation.registry import VALUATION_METHODS, make_method
from llm_attrib.valuation.result import ValuationResult
from llm_attrib.valuation.semivalue_weights import banzhaf_log_weight, beta_log_weight, shapley_log_weight
from llm_attrib.valuation.stopping import (
    MaxIterations,
    MaxUtilityEvaluations,
    MinIterations,
    RelativeChange,
    StandardErrorBelow,
    StoppingCriterion,
)
from llm_attrib.valuation.text import embed_texts, value_dataset
from llm_attrib.valuation.torch_estimator import TorchEstimator
from llm_attrib.valuation.utility import Utility

__all__ = [
    "DVRL", "DataBanzhaf", "DataOOB", "BetaShapley", "ESTIMATORS", "KNNShapley", "LeaveOneOut", "MaxIterations",
    "MaxUtilityEvaluations", "MinIterations", "RelativeChange", "SampledUtilities", "StandardErrorBelow",
    "StoppingCriterion", "TMCShapley", "TorchEstimator", "Utility", "VALUATION_METHODS", "Valuation",
    "ValuationResult", "banzhaf_log_weight", "beta_log_weight", "embed_texts", "estimate_semivalue",
    "exact_banzhaf", "exact_semivalue", "exact_shapley", "knn_utility", "make_estimator", "make_method",
    "out_of_bag_values", "shapley_log_weight", "value_dataset",
]
