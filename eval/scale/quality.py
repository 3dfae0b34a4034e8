"""Prefilter recall of the full method's top-10 vs K, and low-rank query Spearman vs full rank (demo corpus).

Run: ``python -m eval.scale.quality`` (writes ``eval/scale/quality.json``; ~2 CPU minutes).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from eval.scale.common import attributor, demo
from llm_attrib.attributors.prefilter import Prefilter

KS = (10, 25, 50, 100, 200)
RANKS = (8, 32, 64)
TOP = 10
N_QUERIES = 40


def main() -> None:
    bundle = demo()
    train, queries = bundle.train_records, bundle.corpus.queries[:N_QUERIES]
    full = attributor(bundle).fit(train)
    start = time.perf_counter()
    reference = full.score(queries, train).values
    full_seconds = time.perf_counter() - start
    best = torch.topk(reference, TOP, dim=1).indices
    out: dict = {"n_train": len(train), "n_queries": len(queries), "full_seconds": full_seconds, "prefilter": [],
                 "query_rank": []}
    for kind in ("tfidf", "bm25"):
        prefilter = Prefilter(index=kind).fit(train)
        for k in KS:
            prefilter.candidates = k
            chosen = prefilter.select(queries)
            recall = sum(len(set(best[q].tolist()) & set(chosen[q].tolist())) for q in range(len(queries)))
            start = time.perf_counter()
            prefilter.around(full).score(queries, train)
            seconds = time.perf_counter() - start
            out["prefilter"].append({"kind": kind, "K": k, "recall@10": recall / (TOP * len(queries)),
                                     "scored": len(set(chosen.flatten().tolist())), "seconds": seconds,
                                     "speedup": full_seconds / seconds})
    for rank in RANKS:
        full.query_rank = rank
        start = time.perf_counter()
        low = full.score(queries, train).values
        seconds = time.perf_counter() - start
        rho = [spearmanr(low[q], reference[q]).statistic for q in range(len(queries))]
        overlap = [len(set(best[q].tolist()) & set(torch.topk(low[q], TOP).indices.tolist())) / TOP
                   for q in range(len(queries))]
        out["query_rank"].append({"rank": rank, "spearman_mean": float(torch.tensor(rho).mean()),
                                  "spearman_min": float(min(rho)), "top10_overlap": float(torch.tensor(overlap).mean()),
                                  "seconds": seconds})
    Path(__file__).with_name("quality.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
