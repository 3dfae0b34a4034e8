"""The grid's cells: one data set × one model depth, a trained tiny GPT-2 and its LDS ground truth.

A cell is a `llm_attrib.evaluation.benchmarks.Benchmark` (model trained with EOS after every record, as
`llm_attrib.demo.training.train_causal_lm` does) plus its `LDSGroundTruth`, cached and resumable under
``cache_dir`` (`llm_attrib.retraining.lds.lds_ground_truth`). The measurement is the adapter's default
log Pr(completion | prompt) (documents: every token after the first), which does NOT include EOS: the tokenizer
adds none, and it is what `llm-attrib trace` measures for a query, so the grid grades what a user is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from eval.grid.config import GridConfig
from eval.grid.data import SOURCES, Budget, fit_lengths, texts
from llm_attrib.demo.model import tiny_gpt2
from llm_attrib.demo.tokenizer import train_tokenizer
from llm_attrib.evaluation.benchmarks import Benchmark
from llm_attrib.retraining.lds import LDSGroundTruth, lds_ground_truth
from llm_attrib.retraining.measure import LogLikelihoodMeasure
from llm_attrib.retraining.retrain import DemoRetrainer
from llm_attrib.store import data_fingerprint

CONTEXT_SLACK = 8
"""Positions beyond the budget: a cut record re-encoded from its decoded text can gain a token or two."""


@dataclass
class Cell:
    """One grid cell: ``benchmark`` (model, tokenizer, records, retrainer) and ``truth`` (its LDS ground truth)."""

    name: str
    data: str
    n_layer: int
    benchmark: Benchmark
    cache_dir: Path
    config: GridConfig
    _truth: LDSGroundTruth | None = field(default=None, repr=False)

    def trials_done(self) -> int:
        """Subsets of the ground truth already retrained and cached (``config.n_subsets`` when it is complete)."""
        return len(list((self.cache_dir / "lds").glob("trial_*.safetensors")))

    def truth(self, progress: Callable[[int, int], None] | None = None) -> LDSGroundTruth:
        """The LDS ground truth (``config.n_subsets`` α-subsets × ``config.seeds_per_subset`` seeds), cached."""
        if self._truth is None:
            b, c = self.benchmark, self.config
            self._truth = lds_ground_truth(
                b.train_records, b.query_records, retrain=b.retrainer, measure=LogLikelihoodMeasure(b.tokenizer),
                train_ids=[r["id"] for r in b.train_records], query_ids=[r["id"] for r in b.query_records],
                n_subsets=c.n_subsets, alpha=c.alpha, seed=c.seed, seeds_per_subset=c.seeds_per_subset,
                cache_dir=self.cache_dir / "lds", settings=b.settings, progress=progress)
        return self._truth


def build_cell(config: GridConfig, data: str, n_layer: int) -> Cell:
    """Train the cell's tokenizer (on its training records) and model (seed ``config.seed``, EOS after each record)."""
    file, builder = SOURCES[data]
    raw = builder(config.data_dir / file, config.n_train + config.n_query, config.seed)
    budget = Budget(config.max_prompt_tokens, config.max_completion_tokens, config.max_document_tokens)
    context = budget.context + CONTEXT_SLACK
    tokenizer = train_tokenizer(texts(raw[: config.n_train]), config.vocab_size, model_max_length=context)
    records = fit_lengths(tokenizer, raw, budget)

    def build_model(model_seed: int) -> torch.nn.Module:
        return tiny_gpt2(len(tokenizer), n_positions=context, n_embd=config.n_embd, n_layer=n_layer, n_head=4,
                         seed=model_seed, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)

    retrainer = DemoRetrainer(build_model, tokenizer, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size)
    train, queries = records[: config.n_train], records[config.n_train:]
    name = f"{data}-L{n_layer}"
    settings: dict[str, Any] = {"grid_cell": name, "data": file, "n_train": config.n_train, "n_query": config.n_query,
                                "seed": config.seed, "budget": vars(budget), **retrainer.settings()}
    benchmark = Benchmark(name, retrainer(train, config.seed), tokenizer, train, queries, retrainer,
                          settings=settings, seed=config.seed)
    key = data_fingerprint({"settings": settings, "n_subsets": config.n_subsets, "alpha": config.alpha,
                            "seeds_per_subset": config.seeds_per_subset})[:10]
    return Cell(name, data, n_layer, benchmark, config.cache_dir / f"grid-{name}-{key}", config)


def cells(config: GridConfig) -> list[Cell]:
    """Every cell of the grid: ``config.datasets`` × ``config.depths`` (models trained now; ground truth on demand)."""
    return [build_cell(config, data, depth) for data in config.datasets for depth in config.depths]
