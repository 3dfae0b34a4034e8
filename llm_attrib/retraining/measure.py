"""The default ``measure`` callable of the counterfactual harnesses: the causal-LM adapter's own measurement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from llm_attrib.adapters.causal_lm import CausalLMAdapter


@dataclass
class LogLikelihoodMeasure:
    """``measure(model, records) -> [n]`` float64 log Pr(completion | prompt) (documents: all tokens after the
    first), by `CausalLMAdapter.measurements`; higher = more likely."""

    tokenizer: Any
    batch_size: int = 32

    def __call__(self, model: torch.nn.Module, records: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        return CausalLMAdapter(model, self.tokenizer, modules="all").measurements(records, self.batch_size)
