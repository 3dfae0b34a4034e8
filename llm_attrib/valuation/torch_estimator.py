"""`TorchEstimator`: a torch module behind the scikit-learn estimator interface (fit / predict /
predict_proba / score), so that every valuation method can value data for a small neural network."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.metrics import accuracy_score, r2_score

ModuleFactory = Callable[[int, int], torch.nn.Module]


@contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Run torch on ``n_threads`` CPU threads inside the block (``None``: leave the setting alone). Tiny
    networks train many times faster on one thread than on several."""
    previous = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def mlp(n_inputs: int, n_outputs: int, hidden: int = 32) -> torch.nn.Module:
    """A one-hidden-layer ReLU network ``[*, n_inputs] -> [*, n_outputs]``."""
    return torch.nn.Sequential(torch.nn.Linear(n_inputs, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_outputs))


class TorchEstimator(BaseEstimator):
    """Train ``module_factory(n_features, n_outputs)`` with Adam on cross-entropy (``task="classification"``,
    one output per class) or squared error (``task="regression"``, one output).

    Training is seeded by ``random_state``: the same data give the same model. ``torch_threads``: CPU threads
    while fitting and predicting (1 suits small networks; ``None`` keeps torch's setting).
    """

    def __init__(self, module_factory: ModuleFactory = mlp, task: str = "classification", epochs: int = 100,
                 learning_rate: float = 1e-2, batch_size: int | None = None, weight_decay: float = 0.0,
                 random_state: int = 0, torch_threads: int | None = 1) -> None:
        self.module_factory = module_factory
        self.task = task
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.torch_threads = torch_threads

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        if self.task == "classification":
            from sklearn.utils import ClassifierTags

            tags.estimator_type, tags.classifier_tags = "classifier", ClassifierTags()
        else:
            from sklearn.utils import RegressorTags

            tags.estimator_type, tags.regressor_tags = "regressor", RegressorTags()
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray) -> "TorchEstimator":
        with torch_threads(self.torch_threads):
            return self._fit(X, y)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> "TorchEstimator":
        inputs = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        if self.task == "classification":
            self.classes_, encoded = np.unique(y, return_inverse=True)
            targets, n_outputs, loss_fn = torch.as_tensor(encoded), len(self.classes_), torch.nn.functional.cross_entropy
        else:
            targets, n_outputs = torch.as_tensor(np.asarray(y), dtype=torch.float32)[:, None], 1
            loss_fn = torch.nn.functional.mse_loss
        generator = torch.Generator().manual_seed(self.random_state)
        with torch.random.fork_rng():
            torch.manual_seed(self.random_state)
            self.module_ = self.module_factory(inputs.shape[1], n_outputs)
        optimizer = torch.optim.Adam(self.module_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        batch_size = self.batch_size or len(inputs)
        self.module_.train()
        for _ in range(self.epochs):
            for batch in torch.randperm(len(inputs), generator=generator).split(batch_size):
                optimizer.zero_grad()
                loss_fn(self.module_(inputs[batch]), targets[batch]).backward()
                optimizer.step()
        self.module_.eval()
        return self

    def _outputs(self, X: np.ndarray) -> torch.Tensor:
        with torch.no_grad(), torch_threads(self.torch_threads):
            return self.module_(torch.as_tensor(np.asarray(X), dtype=torch.float32))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Float ``[n, n_classes]`` (classification only)."""
        return torch.softmax(self._outputs(X), dim=-1).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class labels or real values ``[n]``."""
        outputs = self._outputs(X)
        if self.task == "classification":
            return self.classes_[outputs.argmax(dim=-1).numpy()]
        return outputs[:, 0].numpy()

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy (classification) or R² (regression); higher = better."""
        scorer = accuracy_score if self.task == "classification" else r2_score
        return float(scorer(y, self.predict(X)))
