"""`Checkpoints`: one adapter configuration over several causal LMs (training checkpoints, or an ensemble).

TracIn sums over a run's checkpoints and TRAK averages over models; both need the same tracked layers and
tokenisation on every model. A checkpoint is a model or a local folder that ``AutoModelForCausalLM.from_pretrained``
loads; a folder is loaded only when its adapter is asked for, so the caller holds one checkpoint at a time.
`TrainingHistory` is where such models come from when a registry factory is given only the final model (the
evaluation suite's benchmarks provide one).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, Union

import torch
from torch import nn

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.curvature.adam import AdamMoment, AdamPreconditioner
from llm_attrib.errors import UserInputError

Checkpoint = Union[nn.Module, str, os.PathLike]


class TrainingHistory(Protocol):
    """How a final model was trained, as far as TracIn and ensembles need it."""

    def checkpoints(self) -> tuple[Sequence[Checkpoint], Sequence[float]]:
        """The run's checkpoints (the last = the final model) and each one's learning-rate weight ``η_k``."""

    def models(self, n: int) -> Sequence[Checkpoint]:
        """The final model and ``n - 1`` others trained on the same data from other seeds."""

    def adam_moments(self) -> Sequence[dict[str, AdamMoment]]:
        """The optimizer's Adam moments at each of `checkpoints` (by parameter name), for Adam-aware TracIn."""


class Checkpoints(Sequence):
    """A sequence of `CausalLMAdapter`, one per checkpoint, all built with ``tokenizer`` and ``adapter_options``
    (``modules``, ``padding_side``, …). Folders are loaded on access (onto ``device`` if given), never cached."""

    def __init__(self, models: Sequence[Checkpoint], tokenizer: Any, *, device: str | torch.device | None = None,
                 **adapter_options: Any):
        if len(models) == 0:
            raise UserInputError("no checkpoints given: pass at least one model or model folder")
        missing = [str(m) for m in models if not isinstance(m, nn.Module) and not Path(m).exists()]
        if missing:
            raise UserInputError(f"checkpoint folder {missing[0]} does not exist")
        self.models = list(models)
        self.tokenizer = tokenizer
        self.device = device
        self.adapter_options = adapter_options

    def __len__(self) -> int:
        return len(self.models)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return Checkpoints(self.models[index], self.tokenizer, device=self.device, **self.adapter_options)
        model = self.models[index]
        if not isinstance(model, nn.Module):
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(model))
            if self.device is not None:
                model = model.to(self.device)
        return CausalLMAdapter(model, self.tokenizer, **self.adapter_options)


class AdamCheckpoints(Checkpoints):
    """`Checkpoints` with the Adam moments saved at each (``moments[k]`` by parameter name), so that TracIn can use
    Adam's step sizes (`llm_attrib.curvature.adam`); a Hugging Face ``Trainer`` run is read by
    `llm_attrib.attributors.trainer_run.TrainerRun` instead."""

    def __init__(self, models: Sequence[Checkpoint], tokenizer: Any, moments: Sequence[dict[str, AdamMoment]], *,
                 device: str | torch.device | None = None, **adapter_options: Any):
        super().__init__(models, tokenizer, device=device, **adapter_options)
        if len(moments) != len(self.models):
            raise UserInputError(f"{len(moments)} optimizer states for {len(self.models)} checkpoints; give one each")
        self.moments = list(moments)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return AdamCheckpoints(self.models[index], self.tokenizer, self.moments[index], device=self.device,
                                   **self.adapter_options)
        return super().__getitem__(index)

    def preconditioner(self, index: int, adapter: CausalLMAdapter) -> AdamPreconditioner:
        """Adam's step sizes at checkpoint ``index`` for ``adapter``'s tracked layers."""
        return AdamPreconditioner.from_moments(adapter.model, adapter.layers, self.moments[index])
