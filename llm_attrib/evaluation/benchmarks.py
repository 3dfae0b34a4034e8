"""The evaluation suite's benchmarks: a trained tiny model, its training records, queries, and how to retrain it.

* `roleplay_benchmark`: a tiny GPT-2 trained on GPTeacher role-play instructions (prompt = instruction + input,
  completion = output), loaded with ``datasets.load_dataset("json", ...)`` as a user would, subsampled with a
  seed and truncated; queries are held-out records of the same file.
* `facts_benchmark`: the synthetic-fact demo corpus (`llm_attrib.demo.default`) at a small recipe; queries ask
  facts whose supporting documents are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm_attrib.demo.default import DemoRecipe, load_default
from llm_attrib.demo.facts import FactCorpus
from llm_attrib.demo.model import tiny_gpt2
from llm_attrib.demo.tokenizer import train_tokenizer
from llm_attrib.demo.training import train_causal_lm
from llm_attrib.evaluation.retrain import DemoRetrainer


@dataclass
class Benchmark:
    """A trained model with its data. ``retrainer`` rebuilds it from scratch on any subset (seeded)."""

    name: str
    model: torch.nn.Module
    tokenizer: Any
    train_records: list[dict[str, Any]]
    query_records: list[dict[str, Any]]
    retrainer: DemoRetrainer
    corpus: FactCorpus | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def _truncate(tokenizer: Any, text: str, max_tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:max_tokens]) if len(ids) > max_tokens else text


def roleplay_records(path: str | Path, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` seeded random records of a GPTeacher-style JSON file as ``{"id", "prompt", "completion"}``."""
    import datasets

    dataset = datasets.load_dataset("json", data_files=str(path), split="train").shuffle(seed=seed)
    dataset = dataset.select(range(min(n, len(dataset))))
    return [
        {
            "id": f"roleplay-{i}",
            "prompt": row["instruction"] + (f"\n{row['input']}" if row["input"] else "") + "\nAnswer:",
            "completion": " " + row["output"].strip(),
        }
        for i, row in enumerate(dataset)
    ]


def roleplay_benchmark(
    path: str | Path,
    *,
    n_train: int = 160,
    n_query: int = 16,
    max_prompt_tokens: int = 24,
    max_completion_tokens: int = 24,
    vocab_size: int = 512,
    n_embd: int = 64,
    epochs: int = 4,
    lr: float = 3e-3,
    batch_size: int = 16,
    seed: int = 0,
) -> Benchmark:
    """Train the role-play tiny GPT-2 (seeded) on ``n_train`` records; ``n_query`` held-out records are the queries."""
    raw = roleplay_records(path, n_train + n_query, seed)
    tokenizer = train_tokenizer([r["prompt"] + r["completion"] for r in raw[:n_train]], vocab_size,
                                model_max_length=max_prompt_tokens + max_completion_tokens + 2)
    records = [
        {**r, "prompt": _truncate(tokenizer, r["prompt"], max_prompt_tokens),
         "completion": _truncate(tokenizer, r["completion"], max_completion_tokens)}
        for r in raw
    ]

    def build_model(model_seed: int) -> torch.nn.Module:
        return tiny_gpt2(len(tokenizer), n_positions=tokenizer.model_max_length, n_embd=n_embd, n_layer=2, n_head=4,
                         seed=model_seed, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)

    retrainer = DemoRetrainer(build_model, tokenizer, epochs=epochs, lr=lr, batch_size=batch_size)
    train, queries = records[:n_train], records[n_train:]
    return Benchmark("roleplay", retrainer(train, seed), tokenizer, train, queries, retrainer,
                     settings={"data": str(path), "n_train": n_train, "n_query": n_query, "seed": seed,
                               "max_prompt_tokens": max_prompt_tokens, "max_completion_tokens": max_completion_tokens,
                               **retrainer.settings()})


FACTS_RECIPE = DemoRecipe(n_entities=8, n_distractors=24, epochs=40)


def facts_benchmark(cache_dir: str | Path, recipe: DemoRecipe = FACTS_RECIPE) -> Benchmark:
    """The demo fact model at ``recipe`` (built once into ``cache_dir``); queries are the corpus's fact queries."""
    bundle = load_default(cache_dir, recipe=recipe)
    tokenizer = bundle.tokenizer

    def build_model(model_seed: int) -> torch.nn.Module:
        return tiny_gpt2(len(tokenizer), recipe.n_positions, recipe.n_embd, recipe.n_layer, recipe.n_head, model_seed,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)

    retrainer = DemoRetrainer(build_model, tokenizer, epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size)
    queries = [{k: q[k] for k in ("id", "prompt", "completion")} for q in bundle.corpus.queries]
    return Benchmark("facts", bundle.model, tokenizer, bundle.train_records, queries, retrainer, corpus=bundle.corpus,
                     settings={"recipe": vars(recipe) if hasattr(recipe, "__dict__") else str(recipe),
                               "greedy_accuracy": bundle.info.get("greedy_accuracy"), **retrainer.settings()})
