"""DVRL (Yoon, Arik & Pfister 2020): a value-estimator network learns, by REINFORCE, which training points
to select so that a model trained on the selection scores well on validation data.

Per iteration: draw a batch of training points, the estimator gives each a selection probability ``p_i``,
a selection ``s_i ~ Bernoulli(p_i)`` trains a fresh model, and its validation score minus a moving-average
baseline is the reward for ``log π(s)``. The estimator sees features, labels and the *marginal* signal
``|y − f_val(x)|`` of a model fitted on the validation set (the paper's key input). A point's value is its
final selection probability: higher = more valuable.

The default reward is the validation log-likelihood for classifiers (smoother than accuracy, which makes
REINFORCE learn in a few hundred steps) and negative squared error for regressors. A reward that counts correct
predictions (accuracy, F1, …, or the default for a classifier without ``predict_proba``) takes few distinct values
on a small validation set, so the policy gradient sees mostly noise (measured: wine AUROC 0.55 against 1.00 with
the log-likelihood); DVRL warns when it is asked for one.
"""

from __future__ import annotations

import warnings
from numbers import Real
from typing import Any

import numpy as np
import torch
from sklearn.base import clone, is_classifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import Interval

from llm_attrib.progress import progress
from llm_attrib.valuation.base import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, UtilityValuation
from llm_attrib.valuation.parallel import root_entropy, single_threaded_call
from llm_attrib.valuation.result import ValuationResult
from llm_attrib.valuation.torch_estimator import torch_threads
from llm_attrib.valuation.utility import Scorer, Utility, log_likelihood


COUNTING_REWARDS = ("accuracy", "balanced_accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted", "precision",
                    "recall", "jaccard")
"""scikit-learn scorer names whose value counts correct predictions: a coarse REINFORCE reward."""


def label_features(estimator: Any, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray,
                   y_val: np.ndarray) -> np.ndarray:
    """Float ``[n, c]``: one-hot labels and ``|one-hot − predicted probabilities|`` of a model fitted on the
    validation set (classification), or standardised ``y`` and ``|y − prediction|`` (regression)."""
    val_model = clone(estimator).fit(X_val, y_val)
    if not is_classifier(estimator):
        scale = np.std(y_val) or 1.0
        return np.stack([y_train / scale, np.abs(y_train - val_model.predict(X_train)) / scale], axis=1)
    classes = val_model.classes_
    one_hot = (y_train[:, None] == classes[None, :]).astype(float)
    if hasattr(val_model, "predict_proba"):
        predicted = val_model.predict_proba(X_train)
    else:
        predicted = (val_model.predict(X_train)[:, None] == classes[None, :]).astype(float)
    return np.concatenate([one_hot, np.abs(one_hot - predicted)], axis=1)


def value_network(n_inputs: int, hidden: int, layers: int) -> torch.nn.Module:
    """MLP ``[*, n_inputs] -> [*]`` of selection probabilities in (0, 1)."""
    blocks: list[torch.nn.Module] = []
    width = n_inputs
    for _ in range(layers):
        blocks += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
        width = hidden
    return torch.nn.Sequential(*blocks, torch.nn.Linear(width, 1), torch.nn.Sigmoid(), torch.nn.Flatten(0))


class DVRL(UtilityValuation):
    """Data valuation by reinforcement learning.

    n_iterations: REINFORCE steps (one model fit each). batch_size: training points per step.
    baseline_window: the reward baseline is an exponential moving average over about this many steps.
    selection_threshold: the mean selection probability is pushed into
    ``[1 − selection_threshold, selection_threshold]`` (weight ``penalty``) so that it neither selects
    nothing nor everything.
    """

    method_name = "dvrl"
    _parameter_constraints = {**UtilityValuation._parameter_constraints, **dict.fromkeys(
        ("n_iterations", "batch_size", "hidden", "layers", "baseline_window"), [AT_LEAST_ONE]),
        "learning_rate": [POSITIVE], "selection_threshold": [Interval(Real, 0.5, 1, closed="both")],
        "penalty": [NON_NEGATIVE]}

    def __init__(self, estimator: Any, n_iterations: int = 200, batch_size: int = 256, hidden: int = 64,
                 layers: int = 2, learning_rate: float = 1e-2, baseline_window: int = 20,
                 selection_threshold: float = 0.9, penalty: float = 1e3, scorer: str | Scorer | None = None,
                 default_score: float = 0.0, random_state: int | None = None, progress: bool = False) -> None:
        self.estimator = estimator
        self.n_iterations = n_iterations
        self.batch_size = batch_size
        self.hidden = hidden
        self.layers = layers
        self.learning_rate = learning_rate
        self.baseline_window = baseline_window
        self.selection_threshold = selection_threshold
        self.penalty = penalty
        self.scorer = scorer
        self.default_score = default_score
        self.random_state = random_state
        self.progress = progress

    def _value(self, X_train, y_train, X_val, y_val) -> ValuationResult:
        probabilistic = is_classifier(self.estimator) and hasattr(self.estimator, "predict_proba")
        counting = self.scorer in COUNTING_REWARDS or (self.scorer is None and is_classifier(self.estimator)
                                                       and not probabilistic)
        if counting:
            warnings.warn(f"DVRL's reward is {self.scorer or 'accuracy'}, which counts correct validation predictions: "
                          "too coarse a signal for REINFORCE (values near random were measured); use a classifier "
                          "with predict_proba and the default log-likelihood reward", UserWarning, stacklevel=3)
        utility = self.make_utility(X_train, y_train, X_val, y_val, cache=False,
                                    default_scorer=log_likelihood if probabilistic else None)
        with torch_threads(1):  # the value network is tiny: more threads cost more than they compute
            return single_threaded_call(self._train, utility, X_train, y_train, X_val, y_val)

    def _train(self, utility: Utility, X_train, y_train, X_val, y_val) -> ValuationResult:
        n = len(y_train)
        features = torch.as_tensor(np.concatenate(
            [StandardScaler().fit_transform(X_train), label_features(self.estimator, X_train, y_train, X_val, y_val)],
            axis=1), dtype=torch.float32)
        seed = root_entropy(self.random_state) % 2**63
        rng = np.random.default_rng(seed)
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            network = value_network(features.shape[1], self.hidden, self.layers)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.learning_rate)
        batch_size = min(self.batch_size, n)
        baseline = utility(np.arange(n))
        seen = np.zeros(n, dtype=int)
        for _ in progress(range(self.n_iterations), "DVRL", enabled=self.progress, unit="iterations"):
            batch = rng.choice(n, batch_size, replace=False)
            seen[batch] += 1
            probabilities = network(features[batch])
            selection = torch.bernoulli(probabilities.detach(), generator=generator)
            reward = utility(batch[selection.numpy() > 0])
            log_likelihood = torch.sum(selection * torch.log(probabilities + 1e-8)
                                       + (1 - selection) * torch.log(1 - probabilities + 1e-8))
            mean_probability = probabilities.mean()
            outside_band = torch.relu(mean_probability - self.selection_threshold) \
                + torch.relu(1 - self.selection_threshold - mean_probability)
            loss = -(reward - baseline) * log_likelihood + self.penalty * outside_band
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            baseline += (reward - baseline) / self.baseline_window
        with torch.no_grad():
            values = network(features).numpy().astype(float)
        return ValuationResult(values, np.full(n, np.nan), seen, self.method_name, self.n_iterations + 1)
