"""The default ``retrain`` and ``measure`` callables of the counterfactual harnesses (LDS, LOO).

`DemoRetrainer` trains a fresh, seeded model with `llm_attrib.demo.training.train_causal_lm` (deterministic on
CPU); `LogLikelihoodMeasure` is the library's measurement, `llm_attrib.demo.training.log_likelihoods`
(sum of completion-token log-probabilities; higher = more likely).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from llm_attrib.demo.training import EpochHook, log_likelihoods, train_causal_lm


@dataclass
class DemoRetrainer:
    """``retrain(records, seed) -> model``: ``build_model(seed)`` (a fresh initialisation) trained on ``records``;
    ``on_epoch_end`` sees each epoch's model (`llm_attrib.demo.training.EpochHook`), e.g. to keep checkpoints."""

    build_model: Callable[[int], torch.nn.Module]
    tokenizer: Any
    epochs: int
    lr: float
    batch_size: int

    def __call__(self, records: Sequence[Mapping[str, Any]], seed: int,
                 on_epoch_end: EpochHook | None = None) -> torch.nn.Module:
        return train_causal_lm(
            self.build_model(seed), self.tokenizer, records,
            epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=seed, on_epoch_end=on_epoch_end,
        )

    def settings(self) -> dict[str, Any]:
        """What a ground-truth cache must match: the model config and the training hyper-parameters."""
        return {
            "model_config": self.build_model(0).config.to_dict(),
            "vocab_size": len(self.tokenizer),
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
        }


@dataclass
class LogLikelihoodMeasure:
    """``measure(model, records) -> [n]`` float64 log Pr(completion | prompt) (documents: all tokens after the first)."""

    tokenizer: Any
    batch_size: int = 32

    def __call__(self, model: torch.nn.Module, records: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        return log_likelihoods(model, self.tokenizer, records, self.batch_size)
