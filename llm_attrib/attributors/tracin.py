"""TracIn-CP (Pruthi et al. 2020) for causal LMs: gradient inner products summed over training checkpoints.

``score[q, z] = Σ_k η_k ∇f(q; θ_k)ᵀ ∇log p(z; θ_k)`` where ``f(q) = log Pr(completion | prompt)``, ``log p(z)`` is
minus the training loss of ``z`` and ``η_k`` the learning rate in force around checkpoint ``θ_k``. **Positive = the
training example raises the query's log-probability**: a gradient step on ``z`` at ``θ_k`` raises ``f(q)`` by
``η_k ∇f(q)ᵀ∇log p(z)`` to first order, and TracIn adds these up over the run. (Pruthi et al. multiply two loss
gradients; with the loss ``-log p`` on both sides the product is the same.)

Each checkpoint's term is the influence attributor with identity curvature (grad-dot, `InfluenceAttributor`), so
streaming, sharding over processes, per-module and per-token parts and resumable chunks come from there.
``normalize="cosine"`` sums ``η_k`` × the cosine of the two gradients at each checkpoint. With a single checkpoint
the score is ``η`` × grad-dot.

With ``optimizer="adam"`` the training-side feature is Adam's: ``Γ(z; θ_k) = ∇log p(z; θ_k) / (√v̂_k + ε)``, with
``v̂_k`` the bias-corrected second moment saved with checkpoint ``k`` (`llm_attrib.curvature.adam` says why this
form), so ``score[q, z] = Σ_k η_k ∇f(q; θ_k)ᵀ Γ(z; θ_k)``: the first-order change of ``f(q)`` from ``z``'s steps under
Adam. The checkpoints must then carry their optimizer state: `TracInAttributor.from_trainer_output` reads a Hugging
Face ``Trainer`` run (`llm_attrib.attributors.trainer_run.TrainerRun`: checkpoints, the logged learning rates and
``optimizer.pt``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from llm_attrib.adapters.base import Adapter
from llm_attrib.attributors.base import Attributor, make_config
from llm_attrib.attributors.influence import DTYPES, InfluenceAttributor
from llm_attrib.config import Config, at_least, option
from llm_attrib.curvature.identity import IdentityCurvature
from llm_attrib.errors import UserInputError
from llm_attrib.scores import Scores

NORMALIZATIONS = (None, "cosine")
OPTIMIZERS = ("sgd", "adam")
"""How a step turns a training gradient into a weight change: plainly (SGD), or by Adam's saved step sizes."""


def _learning_rates_check(value: tuple) -> str | None:
    ok = all(isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr >= 0
             for lr in value)
    return None if ok else "finite non-negative numbers, one per checkpoint"


@dataclass(frozen=True)
class TracInConfig(Config):
    """Options of `TracInAttributor`."""

    learning_rates: tuple = option((), "η_k per checkpoint (the learning rate x the steps it stands for)",
                                   check=_learning_rates_check, flag=False)
    normalize: str | None = option(None, "none (gradient inner products) or cosine (cosine of the gradients at "
                                         "each checkpoint)", choices=NORMALIZATIONS)
    optimizer: str = option("sgd", "training-side feature: the gradient (sgd) or Adam's step direction from each "
                                   "checkpoint's saved moments, gradient / (sqrt(v_hat) + eps) (adam)",
                            choices=OPTIMIZERS)
    batch_size: int = option(8, "examples per forward/backward pass", check=at_least(1))
    dtype: str | None = option(None, "dtype of the gradient contractions (none = float32, float64 for a float64 "
                                     "model)", choices=(None, *DTYPES), flag=False)


class TracInAttributor(Attributor):
    """TracIn-CP scores; see the module docstring for sign and units.

    Args:
        checkpoints: one adapter per checkpoint, all tracking the same layers: a list of adapters, a
            `llm_attrib.attributors.checkpoints.Checkpoints` (models or folders, loaded one at a time), or a
            `llm_attrib.attributors.trainer_run.TrainerRun` (needed by ``optimizer="adam"``: it has the moments).
        learning_rates: ``η_k`` per checkpoint (shorthand for ``config.learning_rates``).
        config: a `TracInConfig`; keyword ``options`` are its fields and override it.
        progress: show progress.
    """

    kind = "tracin"
    config_class = TracInConfig
    config: TracInConfig

    def __init__(self, checkpoints: Sequence[Adapter], learning_rates: Sequence[float] | None = None, *,
                 config: TracInConfig | None = None, progress: bool = False, **options: Any):
        if learning_rates is not None:
            options["learning_rates"] = tuple(learning_rates)
        self.config = make_config(TracInConfig, config, options)
        if len(checkpoints) == 0:
            raise UserInputError("TracIn needs at least one checkpoint")
        if len(self.config.learning_rates) != len(checkpoints):
            raise UserInputError(f"{len(self.config.learning_rates)} learning rates for {len(checkpoints)} "
                                 "checkpoints; give one per checkpoint")
        if self.config.optimizer == "adam" and not callable(getattr(checkpoints, "preconditioner", None)):
            raise UserInputError("optimizer='adam' reads each checkpoint's Adam moments: give a TrainerRun (or use "
                                 "TracInAttributor.from_trainer_output), not bare models")
        self.checkpoints = checkpoints
        self.learning_rates = [float(lr) for lr in self.config.learning_rates]
        self.progress = progress
        self.n_train: int | None = None

    @classmethod
    def from_trainer_output(cls, output_dir: str | Path, tokenizer: Any = None, *, optimizer: str = "adam",
                            base_model: Any = None, device: Any = None, adapter_options: dict[str, Any] | None = None,
                            **options: Any) -> "TracInAttributor":
        """TracIn over the checkpoints of a Hugging Face ``Trainer`` run (full or peft), weighted by the learning rates
        it logged (`TrainerRun.learning_rate_weights`), Adam-aware by default."""
        from llm_attrib.attributors.trainer_run import TrainerRun

        run = TrainerRun(output_dir, tokenizer, base_model=base_model, device=device, **(adapter_options or {}))
        return cls(run, run.learning_rate_weights(), optimizer=optimizer, **options)

    @property
    def name(self) -> str:
        return ("tracin" + ("-adam" if self.config.optimizer == "adam" else "")
                + (f"-{self.config.normalize}" if self.config.normalize else ""))

    @property
    def is_fitted(self) -> bool:
        return self.n_train is not None

    def _bound_to(self) -> dict[str, Any]:
        return {"checkpoints": [self.checkpoints[k].fingerprint() for k in range(len(self.checkpoints))]}

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {"n_train": self.n_train}

    def _load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        self.n_train = int(metadata["n_train"])

    @property
    def units(self) -> str:
        what = "cosines" if self.config.normalize == "cosine" else (
            "inner products of query gradients and Adam steps" if self.config.optimizer == "adam"
            else "gradient inner products")
        return f"learning-rate-weighted {what}, summed over checkpoints (positive = raises the query's log-probability)"

    def fit(self, train: Sequence[Any]) -> "TracInAttributor":
        """Nothing to estimate (the curvature is the identity); records the training-set size."""
        if len(train) == 0:
            raise UserInputError("the training set is empty")
        self.n_train = len(train)
        return self

    def _per_checkpoint(self, k: int) -> InfluenceAttributor:
        """Checkpoint ``k``'s term: grad-dot, or (adam) query gradients against Adam steps."""
        self._check_fitted()
        adapter = self.checkpoints[k]
        curvature = (self.checkpoints.preconditioner(k, adapter) if self.config.optimizer == "adam"
                     else IdentityCurvature().load_state({}, {"n_train": self.n_train}))
        return InfluenceAttributor(adapter, curvature, normalize=self.config.normalize,
                                   batch_size=self.config.batch_size, dtype=self.config.dtype, progress=self.progress)

    def score(self, queries: Sequence[Any], train: Iterable[Any], *, per_module: bool = False,
              per_token: bool = False, output_dir: str | Path | None = None) -> Scores:
        """Scores ``[n_query, n_train]`` (positive = raises the query's log-probability).

        ``train`` is read once per checkpoint (a list, a ``Dataset`` or a re-iterable ``IterableDataset``). Options as
        in `InfluenceAttributor.score`; with ``output_dir`` each checkpoint's chunks go to ``checkpoint-NNN/`` there.
        """
        if len(self.checkpoints) > 1 and iter(train) is train:
            raise UserInputError("the training data is read once per checkpoint: pass a list, a Dataset or a "
                                 "re-iterable IterableDataset, not a one-shot iterator")
        parts = []
        for k in range(len(self.checkpoints)):
            folder = None if output_dir is None else Path(output_dir) / f"checkpoint-{k:03d}"
            parts.append(self._per_checkpoint(k).score(
                queries, train, per_module=per_module, per_token=per_token, output_dir=folder))
        return weighted_sum(parts, self.learning_rates, method=self.name, units=self.units,
                            metadata={"learning_rates": self.learning_rates, "n_train": self.n_train})

    def self_influence(self, train: Sequence[Any]) -> torch.Tensor:
        """``[n_train]``: ``Σ_k η_k ∇log p(z; θ_k)ᵀ Γ(z; θ_k)`` (``Γ`` = the gradient, or Adam's step; never
        normalised) — large for atypical or mislabelled records."""
        return sum(lr * self._per_checkpoint(k).self_influence(train)
                   for k, lr in enumerate(self.learning_rates))


def weighted_sum(parts: Sequence[Scores], weights: Sequence[float], **fields: Any) -> Scores:
    """``Σ_k w_k parts[k]`` over values and any per-module and per-token parts; ids from the first part."""
    first = parts[0]
    per_module = None if first.per_module is None else {
        name: sum(w * p.per_module[name] for w, p in zip(weights, parts)) for name in first.per_module}
    per_token = None if first.per_token is None else [
        [sum(w * p.per_token[q][n] for w, p in zip(weights, parts)) for n in range(len(row))]
        for q, row in enumerate(first.per_token)]
    return Scores(values=sum(w * p.values for w, p in zip(weights, parts)), query_ids=list(first.query_ids),
                  train_ids=list(first.train_ids), per_module=per_module, per_token=per_token, **fields)
