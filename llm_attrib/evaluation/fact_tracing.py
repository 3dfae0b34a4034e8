"""Fact tracing on the synthetic-fact corpus (`llm_attrib.demo.facts.FactCorpus`).

Retrieval: each query asks one fact; the documents stating it are its ground truth. Recall@k and MRR are
reported over all of them, over the *paraphrases* only (stated without the query's keywords, where lexical
retrieval struggles) and over the *verbatim* ones (direct statements and question/answer documents).

Tail-patch (Chang et al. 2024): take one SGD step on the summed NLL of the top-k retrieved documents and
measure the gain in the query's log Pr(completion | prompt); random scores give the baseline.
A higher gain means the retrieved documents really teach the fact.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.demo.facts import FactCorpus
from llm_attrib.demo.training import forward, token_log_probs
from llm_attrib.evaluation.metrics import mean_reciprocal_rank, recall_at_k
from llm_attrib.scores import Scores

RELEVANCE_SPLITS = {
    "all": lambda document: True,
    "paraphrase": lambda document: document["kind"] == "paraphrase",
    "verbatim": lambda document: document["kind"] in ("direct", "qa"),
}


def relevant_indices(corpus: FactCorpus, scores: Scores, keep: Any = RELEVANCE_SPLITS["all"]) -> list[list[int]]:
    """For each query of ``scores`` (by id), the training columns stating its fact and passing ``keep``."""
    column = {train_id: index for index, train_id in enumerate(scores.train_ids)}
    kinds = {document["id"]: document for document in corpus.documents}
    return [
        sorted(column[d] for d in corpus.relevant(query_id) if d in column and keep(kinds[d]))
        for query_id in scores.query_ids
    ]


def retrieval_report(scores: Scores, corpus: FactCorpus, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k and MRR per relevance split (`RELEVANCE_SPLITS`); a split only counts queries that have some."""
    report: dict[str, float] = {}
    for split, keep in RELEVANCE_SPLITS.items():
        relevant = relevant_indices(corpus, scores, keep)
        rows = [q for q, rel in enumerate(relevant) if rel]
        if not rows:
            continue
        values = scores.values[rows]
        kept = [relevant[q] for q in rows]
        report.update({f"{split}/recall@{k}": recall_at_k(values, kept, k) for k in ks})
        report[f"{split}/mrr"] = mean_reciprocal_rank(values, kept)
    return report


def sgd_step_gain(
    model: torch.nn.Module,
    tokenizer: Any,
    query: Mapping[str, Any],
    documents: Sequence[Mapping[str, Any]],
    lr: float,
) -> float:
    """Gain in ``query``'s log Pr(completion | prompt) after one SGD step (step size ``lr``) on the summed NLL
    of ``documents``; the model's weights are restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    adapter = CausalLMAdapter(model, tokenizer, modules="all")
    before = float(adapter.measurements([query])[0])
    batch = adapter.collate(adapter.encode(documents))
    model.zero_grad(set_to_none=True)
    (-token_log_probs(forward(model, batch), batch.labels).sum()).backward()
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-lr)
    after = float(adapter.measurements([query])[0])
    with torch.no_grad():
        for p, value in zip(params, saved):
            p.copy_(value)
    model.zero_grad(set_to_none=True)
    return after - before


def tail_patch_report(
    model: torch.nn.Module,
    tokenizer: Any,
    scores: Scores,
    queries: Sequence[Mapping[str, Any]],
    documents: Sequence[Mapping[str, Any]],
    *,
    ks: Sequence[int] = (1, 5),
    lr: float = 1e-3,
) -> dict[str, float]:
    """Mean tail-patch gain (log-probability units) of each query's top-k documents by ``scores``, with
    ``queries`` and ``documents`` in the order of the scores' rows and columns. The baseline is the same report
    for `llm_attrib.attributors.text.RandomAttributor` scores (k random documents)."""
    report: dict[str, float] = {}
    for k in ks:
        top = torch.topk(scores.values, min(k, scores.values.shape[1]), dim=1).indices
        gains = [sgd_step_gain(model, tokenizer, q, [documents[j] for j in top[i].tolist()], lr) for i, q in enumerate(queries)]
        report[f"tail_patch@{k}"] = sum(gains) / len(gains)
    return report
