"""The adapter interface: what is differentiated, for any model family.

An adapter turns records into batches and a batch into per-example log-likelihoods, so the rest of the
library never needs to know the model family:

* ``log_prob(batch) -> [B]``: the per-example log-likelihood of the scored targets; for a training example
  it is ``-L(z)``, minus its training loss.
* ``measure(batch) -> [B]``: the query measurement ``f(q)``; for causal LMs ``log Pr(completion | prompt)``,
  the same as ``log_prob``. Gradients of both point in the direction that *raises* the log-probability.
* ``sampled_log_prob(batch, generator) -> [B]``: the same with targets drawn from the model's own
  predictive distribution (true-Fisher curvature, Bae et al. 2022).
* ``token_mask(batch) -> [B, T]``: which positions hold real inputs (layer-input statistics skip padding).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from llm_attrib.capture import TrackedLayer
from llm_attrib.data import batched
from llm_attrib.store import data_fingerprint, model_fingerprint


class Adapter(ABC):
    """Base class of model adapters; see the module docstring for the contract."""

    model: nn.Module
    layers: list[TrackedLayer]

    @abstractmethod
    def encode(self, records: Sequence[Any], first_index: int = 0) -> list[Any]:
        """Validate and tokenise/convert records into examples the adapter can collate.

        ``first_index`` is the position of ``records[0]`` in the user's data, for error messages.
        """

    @abstractmethod
    def collate(self, examples: Sequence[Any]) -> Any:
        """Examples → one batch on the model's device."""

    @abstractmethod
    def log_prob(self, batch: Any) -> torch.Tensor:
        """Per-example log-likelihood of the scored targets ``[B]`` (differentiable)."""

    def measure(self, batch: Any) -> torch.Tensor:
        """The query measurement ``f(q)`` per example ``[B]``; by default the log-likelihood."""
        return self.log_prob(batch)

    @abstractmethod
    def sampled_log_prob(self, batch: Any, generator: torch.Generator) -> torch.Tensor:
        """Per-example log-likelihood of targets sampled from the model ``[B]`` (differentiable)."""

    @abstractmethod
    def token_mask(self, batch: Any) -> torch.Tensor:
        """``[B, T]`` bool: positions whose layer inputs are real (not padding)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def batches(self, examples: Sequence[Any], batch_size: int) -> Iterator[Any]:
        for chunk in batched(examples, batch_size):
            yield self.collate(chunk)

    def settings(self) -> dict[str, Any]:
        """What besides the weights and tracked layers changes a result (how records are read and tokenised, EOS,
        the measurement), as JSON values; part of `fingerprint`. Adapters with such options extend it."""
        return {}

    def fingerprint(self) -> str:
        """Hash of the model's weights (exact bytes), the tracked layers and `settings`: a cache made for another
        model, other layers or another measurement is refused."""
        described = {"layers": [layer.name for layer in self.layers], "settings": self.settings()}
        return f"{model_fingerprint(self.model)}-{data_fingerprint(described)[:8]}"


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 → float32 for log-softmax; float32 and float64 are kept."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor
