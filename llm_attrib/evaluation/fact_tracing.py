"""Fact tracing on the synthetic-fact corpus (`llm_attrib.demo.facts.FactCorpus`).

Retrieval: each query asks one fact; the documents stating it are its ground truth. Recall@k and MRR are
reported over all of them, over the *paraphrases* only (stated without the query's keywords, where lexical
retrieval struggles), over the *verbatim* ones (direct statements and question/answer documents) and, in a corpus
with aliases, over the *alias* documents (the fact stated under another name of the person).

Per query group (`group_report`; `llm_attrib.demo.facts.QUERY_GROUPS`: verbatim, paraphrased and alias queries):
MRR and recall@10 over all relevant documents and recall@10 of the alias documents, with every query's own values
so that two methods can be compared query by query (`paired_difference`: mean ± standard error).

Tail-patch (Chang et al. 2024): take one SGD step on the summed NLL of the top-k retrieved documents and
measure the gain in the query's log Pr(completion | prompt); random scores give the baseline.
A higher gain means the retrieved documents really teach the fact.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.demo.facts import QUERY_GROUPS, FactCorpus
from llm_attrib.demo.training import forward, token_log_probs
from llm_attrib.evaluation.metrics import mean_reciprocal_rank, recall_at_k
from llm_attrib.scores import Scores

RELEVANCE_SPLITS = {
    "all": lambda document: True,
    "paraphrase": lambda document: document["kind"] == "paraphrase",
    "verbatim": lambda document: document["kind"] in ("direct", "qa"),
    "alias": lambda document: document["kind"] == "alias",
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


def group_report(scores: Scores, corpus: FactCorpus, k: int = 10) -> dict[str, Any]:
    """Per query group ``g`` of the corpus, keys ``queries/g/...``: ``mrr``, ``recall@k`` (all relevant documents),
    ``alias_recall@k`` (alias documents; only where the group's queries have some), ``n_query`` and the per-query
    values under ``per_query`` (``{"query_ids", "rr", "recall@k", "alias_recall@k"}``)."""
    relevant = relevant_indices(corpus, scores)
    alias = relevant_indices(corpus, scores, RELEVANCE_SPLITS["alias"])
    report: dict[str, Any] = {}
    for group in QUERY_GROUPS:
        rows = [q for q, query_id in enumerate(scores.query_ids)
                if corpus.query_group(query_id) == group and relevant[q]]
        if not rows:
            continue
        per_query: dict[str, list[Any]] = {"query_ids": [scores.query_ids[q] for q in rows], "rr": [],
                                           f"recall@{k}": []}
        for q in rows:
            values = scores.values[q:q + 1]
            per_query["rr"].append(mean_reciprocal_rank(values, [relevant[q]]))
            per_query[f"recall@{k}"].append(recall_at_k(values, [relevant[q]], k))
        if all(alias[q] for q in rows):
            per_query[f"alias_recall@{k}"] = [recall_at_k(scores.values[q:q + 1], [alias[q]], k) for q in rows]
        key = f"queries/{group}"
        report.update({f"{key}/n_query": len(rows), f"{key}/mrr": _mean(per_query["rr"]),
                       f"{key}/recall@{k}": _mean(per_query[f"recall@{k}"]), f"{key}/per_query": per_query})
        if f"alias_recall@{k}" in per_query:
            report[f"{key}/alias_recall@{k}"] = _mean(per_query[f"alias_recall@{k}"])
    return report


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def paired_difference(ours: Sequence[float], theirs: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of ``ours[q] - theirs[q]`` over the same queries (s.e. = sample s.d. / √n; 0 for one
    query)."""
    if len(ours) != len(theirs) or not ours:
        raise ValueError(f"paired values need the same non-zero number of queries, not {len(ours)} and {len(theirs)}")
    differences = [a - b for a, b in zip(ours, theirs)]
    mean = _mean(differences)
    if len(differences) == 1:
        return mean, 0.0
    variance = sum((d - mean) ** 2 for d in differences) / (len(differences) - 1)
    return mean, math.sqrt(variance / len(differences))


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
