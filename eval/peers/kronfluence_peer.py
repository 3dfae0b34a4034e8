"""kronfluence (pomonam/kronfluence) EK-FAC influence as a peer, with OUR measurement, loss, modules and sign.

* Measurement f: Σ log Pr(completion token | prefix) (prompt and padding masked out) — the same as ours.
* Training loss L: summed token NLL over each record's scored tokens; with ``sample=True`` (true Fisher) the
  targets are sampled from the model's own predictive distribution.
* Tracked modules: the MLP Linear layers (``…mlp.c_fc``/``…mlp.c_proj`` on GPT-2, ``…mlp.*_proj`` on Llama).
  kronfluence supports only ``nn.Linear``, so GPT-2's ``Conv1D`` layers are converted to equivalent Linears
  (weight transposed) in a copy of the model.

Sign: kronfluence returns ``∇f(q)ᵀ (G + λI)⁻¹ ∇L(z)`` with no minus sign (see ``kronfluence/module/linear.py``:
the preconditioned query gradient is contracted with the training gradient as is). Up-weighting z by ε moves
the parameters by ``-ε (G + λI)⁻¹ ∇L(z)``, so f changes by ``-ε × score``: a *positive* kronfluence score
means z *lowers* f. With f = log-probability our convention (positive = raises the log-probability) is the
negation, which `KronfluencePeer.score` returns.
"""

from __future__ import annotations

import copy
import re
import tempfile
import time
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers.pytorch_utils import Conv1D

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.data import IGNORE_INDEX, Encoded, collate, record_ids
from llm_attrib.scores import Scores

MLP_PATTERN = r"(^|\.)mlp\.[^.]+$"


def conv1d_to_linear(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``Conv1D`` layers (``y = x W + b``, ``W [in, out]``) are ``nn.Linear`` (``W.T``)."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):
            linear = nn.Linear(module.weight.shape[0], module.weight.shape[1])
            with torch.no_grad():
                linear.weight.copy_(module.weight.T)
                linear.bias.copy_(module.bias)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, linear)
    return model


class _Encoded(Dataset):
    def __init__(self, examples: Sequence[Encoded]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Encoded:
        return self.examples[index]


def _logits(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[B, T-1, V]`` logits predicting tokens ``1..T-1``."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 position_ids=batch["position_ids"]).logits[:, :-1].float()


def _summed_log_prob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Σ log Pr(target) over positions whose target is not -100."""
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (log_probs * (targets != IGNORE_INDEX)).sum()


def make_task(tracked: list[str]) -> Any:
    from kronfluence.task import Task

    class CausalLMTask(Task):
        def compute_train_loss(self, batch: Any, model: nn.Module, sample: bool = False) -> torch.Tensor:
            logits = _logits(model, batch)
            targets = batch["labels"][:, 1:]
            if sample:
                sampled = torch.distributions.Categorical(logits=logits.detach()).sample()
                targets = torch.where(targets != IGNORE_INDEX, sampled, targets)
            return -_summed_log_prob(logits, targets)

        def compute_measurement(self, batch: Any, model: nn.Module) -> torch.Tensor:
            return _summed_log_prob(_logits(model, batch), batch["labels"][:, 1:])

        def get_influence_tracked_modules(self) -> list[str]:
            return tracked

        def get_attention_mask(self, batch: Any) -> torch.Tensor:
            return batch["attention_mask"]

    return CausalLMTask()


class KronfluencePeer:
    """kronfluence pairwise influence scores returned as our `Scores` (positive = raises the log-probability)."""

    method = "kronfluence-ekfac"

    def __init__(self, model: nn.Module, tokenizer: Any, strategy: str = "ekfac", damping: float | None = 1e-8,
                 batch_size: int = 16, seed: int = 0, fisher: str = "sampled"):
        self.model = conv1d_to_linear(model).eval()
        self.tokenizer, self.strategy, self.damping, self.batch_size, self.seed = tokenizer, strategy, damping, batch_size, seed
        self.fisher = fisher  # "sampled" (true Fisher, targets drawn from the model) or "empirical" (the data's targets)
        self.tracked = [name for name, m in self.model.named_modules() if isinstance(m, nn.Linear) and re.search(MLP_PATTERN, name)]
        self._workdir = tempfile.TemporaryDirectory(prefix="kronfluence_peer_")
        self._analyzer: Any = None
        self._train: _Encoded | None = None

    def _dataset(self, records: Sequence[Mapping[str, Any]]) -> _Encoded:
        return _Encoded(CausalLMAdapter(self.model, self.tokenizer, modules="all").encode(records))

    def _loader_kwargs(self) -> Any:
        from kronfluence.utils.dataset import DataLoaderKwargs

        def to_dict(examples: Sequence[Encoded]) -> dict[str, torch.Tensor]:
            batch = collate(examples, pad_token_id=self.tokenizer.pad_token_id)
            return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                    "position_ids": batch.position_ids, "labels": batch.labels}

        return DataLoaderKwargs(collate_fn=to_dict, num_workers=0)

    def fit(self, train_records: Sequence[Mapping[str, Any]]) -> "KronfluencePeer":
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.arguments import FactorArguments

        torch.manual_seed(self.seed)
        task = make_task(self.tracked)
        prepared = prepare_model(self.model, task)
        self._analyzer = Analyzer(analysis_name="peer", model=prepared, task=task, cpu=True, disable_tqdm=True,
                                  output_dir=self._workdir.name)
        self._analyzer.set_dataloader_kwargs(self._loader_kwargs())
        self._train = self._dataset(train_records)
        # fit_all_factors' three stages, called one by one so that each is timed (`self.timings`)
        factor_args = FactorArguments(strategy=self.strategy, use_empirical_fisher=self.fisher == "empirical")
        common = dict(factors_name="factors", factor_args=factor_args, overwrite_output_dir=True)
        data = dict(dataset=self._train, per_device_batch_size=self.batch_size)
        stages = [("covariance", self._analyzer.fit_covariance_matrices, data),
                  ("eigendecomposition", self._analyzer.perform_eigendecomposition, {}),
                  ("lambda", self._analyzer.fit_lambda_matrices, data)]
        self.timings = {}
        for stage, call, kwargs in stages:  # each is a no-op where the strategy does not need it
            start = time.perf_counter()
            call(**common, **kwargs)
            self.timings[stage] = time.perf_counter() - start
        self._train_ids = record_ids(train_records)
        return self

    def score(self, query_records: Sequence[Mapping[str, Any]], train_records: Sequence[Mapping[str, Any]] | None = None) -> Scores:
        from kronfluence.arguments import ScoreArguments

        if self._analyzer is None:
            self.fit(train_records)
        self._analyzer.compute_pairwise_scores(
            scores_name="scores", factors_name="factors", query_dataset=self._dataset(query_records),
            train_dataset=self._train, per_device_query_batch_size=self.batch_size,
            per_device_train_batch_size=self.batch_size, score_args=ScoreArguments(damping_factor=self.damping),
            overwrite_output_dir=True,
        )
        values = self._analyzer.load_pairwise_scores("scores")["all_modules"]
        return Scores(values=-values.float(), query_ids=record_ids(query_records), train_ids=list(self._train_ids),
                      method=self.method, units="kronfluence score, negated: positive = raises the log-probability",
                      metadata={"strategy": self.strategy, "damping": self.damping, "modules": self.tracked})


    def self_influence(self, train_records: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """``[n_train]`` kronfluence self-influence ``∇L(z)ᵀ (G + λI)⁻¹ ∇L(z)`` (no sign change: it is quadratic)."""
        from kronfluence.arguments import ScoreArguments

        if self._analyzer is None:
            self.fit(train_records)
        self._analyzer.compute_self_scores(
            scores_name="self", factors_name="factors", train_dataset=self._dataset(train_records),
            per_device_train_batch_size=self.batch_size, score_args=ScoreArguments(damping_factor=self.damping),
            overwrite_output_dir=True,
        )
        return self._analyzer.load_self_scores("self")["all_modules"].double()


PEERS = {"kronfluence-ekfac": lambda model, tokenizer: KronfluencePeer(model, tokenizer)}
