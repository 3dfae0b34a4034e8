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
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from llm_attrib.adapters.base import Adapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.curvature.identity import IdentityCurvature
from llm_attrib.errors import UserInputError
from llm_attrib.scores import Scores

NORMALIZATIONS = (None, "cosine")


class TracInAttributor:
    """TracIn-CP scores; see the module docstring for sign and units.

    Args:
        checkpoints: one adapter per checkpoint, all tracking the same layers: a list of adapters or a
            `llm_attrib.attributors.checkpoints.Checkpoints` (models or folders, loaded one at a time).
        learning_rates: ``η_k`` per checkpoint (e.g. the learning rate × the number of steps it stands for).
        normalize: None (gradient inner products) or "cosine" (cosine of the gradients at each checkpoint).
        batch_size: examples per forward/backward pass.
        progress: show progress bars.
        dtype: dtype of the gradient contractions; None = each model's.
    """

    def __init__(self, checkpoints: Sequence[Adapter], learning_rates: Sequence[float], *,
                 normalize: str | None = None, batch_size: int = 8, progress: bool = False,
                 dtype: torch.dtype | None = None):
        if len(checkpoints) == 0:
            raise UserInputError("TracIn needs at least one checkpoint")
        if len(learning_rates) != len(checkpoints):
            raise UserInputError(f"{len(learning_rates)} learning rates for {len(checkpoints)} checkpoints; "
                                 "give one per checkpoint")
        if not all(math.isfinite(lr) and lr >= 0 for lr in learning_rates):
            raise UserInputError(f"learning rates must be finite and non-negative, not {list(learning_rates)}")
        if normalize not in NORMALIZATIONS:
            raise UserInputError(f"normalize must be one of {NORMALIZATIONS}, not {normalize!r}")
        self.checkpoints = checkpoints
        self.learning_rates = [float(lr) for lr in learning_rates]
        self.normalize = normalize
        self.batch_size = batch_size
        self.progress = progress
        self.dtype = dtype
        self.n_train: int | None = None

    @property
    def name(self) -> str:
        return "tracin" + (f"-{self.normalize}" if self.normalize else "")

    @property
    def units(self) -> str:
        what = "cosines" if self.normalize == "cosine" else "gradient inner products"
        return f"learning-rate-weighted {what}, summed over checkpoints (positive = raises the query's log-probability)"

    def fit(self, train: Sequence[Any]) -> "TracInAttributor":
        """Nothing to estimate (the curvature is the identity); records the training-set size."""
        if len(train) == 0:
            raise UserInputError("the training set is empty")
        self.n_train = len(train)
        return self

    def _per_checkpoint(self, adapter: Adapter) -> InfluenceAttributor:
        if self.n_train is None:
            raise UserInputError("call fit(train) before scoring")
        identity = IdentityCurvature().load_state({}, {"n_train": self.n_train})
        return InfluenceAttributor(adapter, identity, normalize=self.normalize, batch_size=self.batch_size,
                                   progress=self.progress, dtype=self.dtype)

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
            parts.append(self._per_checkpoint(self.checkpoints[k]).score(
                queries, train, per_module=per_module, per_token=per_token, output_dir=folder))
        return weighted_sum(parts, self.learning_rates, method=self.name, units=self.units,
                            metadata={"learning_rates": self.learning_rates, "n_train": self.n_train})

    def self_influence(self, train: Sequence[Any]) -> torch.Tensor:
        """``[n_train]``: ``Σ_k η_k ‖∇log p(z; θ_k)‖²`` (never normalised) — large for atypical or mislabelled records."""
        return sum(lr * self._per_checkpoint(self.checkpoints[k]).self_influence(train)
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
