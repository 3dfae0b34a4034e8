"""Shared set-up of the scale benchmarks: the demo model and a fact corpus of any size."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from scipy.stats import spearmanr

from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.demo.default import load_default


def demo() -> Any:
    torch.set_num_threads(1)
    return load_default()


def corpus_of_size(records: list[dict], n: int) -> list[dict]:
    """``n`` training documents: the demo corpus repeated, each copy's documents tagged with its copy number
    (a distinct text, so the lexical index and the gradients see ``n`` different documents)."""
    out = []
    for i in range(n):
        record = records[i % len(records)]
        copy = i // len(records)
        text = record["text"] if copy == 0 else f"{record['text']} ({copy})"
        out.append({"id": f"{record['id']}-{copy}", "text": text})
    return out


def attributor(bundle: Any, **options: Any) -> InfluenceAttributor:
    """EK-FAC influence on the demo model's MLP layers (kronfluence's damping default, sampled Fisher)."""
    return InfluenceAttributor(CausalLMAdapter(bundle.model, bundle.tokenizer), "ekfac", damping=1e-8,
                               batch_size=16, **options)


@contextmanager
def timer(into: dict, key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    into[key] = time.perf_counter() - start


def agreement_with_kronfluence(ours: torch.Tensor, theirs: torch.Tensor, k: int = 10) -> dict[str, float]:
    """Mean over queries of the Spearman correlation of two ``[n_q, n]`` score matrices, and the mean shared fraction
    of their top-``k`` columns (the columns of our results tables)."""
    ours, theirs = ours.double(), theirs.double()
    rho = [spearmanr(a, b).statistic for a, b in zip(ours, theirs)]
    overlap = [len(set(torch.topk(a, k).indices.tolist()) & set(torch.topk(b, k).indices.tolist())) / k
               for a, b in zip(ours, theirs)]
    return {"spearman_vs_kronfluence": float(sum(rho) / len(rho)),
            f"top{k}_overlap_vs_kronfluence": sum(overlap) / len(overlap)}
