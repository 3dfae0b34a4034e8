"""`ClassifierAdapter`: a plain torch classifier ``model(x) -> logits [B, C]`` on ``(x, y)`` records."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from llm_attrib.adapters.base import Adapter, upcast
from llm_attrib.capture import find_layers
from llm_attrib.errors import UserInputError


def _log_prob(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(upcast(logits), dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``logit_y − logsumexp(other logits)``: the log-odds of the true class."""
    logits = upcast(logits)
    others = logits.scatter(-1, y.unsqueeze(-1), float("-inf"))
    return logits.gather(-1, y.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(others, dim=-1)


MEASUREMENTS = {"log_prob": _log_prob, "margin": _margin}


class ClassifierAdapter(Adapter):
    """Training objective: ``log Pr(y | x)`` (minus cross-entropy). Measurement: ``log_prob`` or ``margin``.

    ``modules``: regexes of the layers to track (default: every Linear layer, the model itself included).

    Records are ``(x, y)`` pairs: ``x`` a feature tensor ``[d]`` (or anything ``model`` accepts once
    stacked), ``y`` an integer class.
    """

    def __init__(self, model: nn.Module, *, modules: Sequence[str] = ("",), measurement: str = "log_prob"):
        if measurement not in MEASUREMENTS:
            raise UserInputError(f"measurement must be one of {sorted(MEASUREMENTS)}, not {measurement!r}")
        self.model = model.eval()
        self.layers = find_layers(model, modules)
        self.measurement = MEASUREMENTS[measurement]

    def settings(self) -> dict[str, Any]:
        return {"measurement": next(name for name, f in MEASUREMENTS.items() if f is self.measurement)}

    def encode(self, records: Sequence[Any], first_index: int = 0) -> list[tuple[torch.Tensor, int]]:
        dtype = next(self.model.parameters()).dtype
        encoded = []
        for index, record in enumerate(records, start=first_index):
            if not (isinstance(record, (tuple, list)) and len(record) == 2):
                raise UserInputError(f"record {index}: expected an (x, y) pair, got {type(record).__name__}")
            encoded.append((torch.as_tensor(record[0], dtype=dtype), int(record[1])))
        return encoded

    def collate(self, examples: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([x for x, _ in examples]).to(self.device)
        y = torch.tensor([y for _, y in examples], device=self.device)
        return x, y

    def log_prob(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return _log_prob(self.model(x), y)

    def measure(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return self.measurement(self.model(x), y)

    def sampled_log_prob(self, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        x, _ = batch
        logits = self.model(x)
        with torch.no_grad():
            y = torch.multinomial(torch.softmax(upcast(logits), dim=-1), 1, generator=generator).squeeze(-1)
        return _log_prob(logits, y)

    def token_mask(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.ones(batch[0].shape[0], 1, dtype=torch.bool, device=self.device)
