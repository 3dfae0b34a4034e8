"""The default ``retrain`` callable of the counterfactual harnesses (LDS, LOO) and of a benchmark's training runs.

`DemoRetrainer` trains a fresh, seeded model with `llm_attrib.demo.training.train_causal_lm` (deterministic on
CPU); the default ``measure`` is `llm_attrib.retraining.measure.LogLikelihoodMeasure`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from llm_attrib.demo.training import EpochHook, train_causal_lm


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
