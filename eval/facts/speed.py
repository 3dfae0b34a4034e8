"""What the per-query prefilter saves: ``python -m eval.facts.speed`` writes ``eval/facts/speed.json`` and
``speed.md``.

A large hard fact corpus (`generate_facts`, ``N`` documents), a tiny GPT-2 (untrained: cost does not depend on the
weights), EK-FAC fitted once; 60 and 600 queries spread evenly over the corpus's queries scored (a) on every
document, (b) on the union of all queries' BM25 top-``K`` (one group, the prefilter before per-query groups), (c) in
per-query groups of 16 and (d) of 1. Reports wall-clock seconds (1 thread), records scored (backward passes) and
query–record pairs contracted, and checks the candidates' scores equal full scoring.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.demo.facts import generate_facts
from llm_attrib.demo.model import tiny_gpt2
from llm_attrib.demo.tokenizer import train_tokenizer
from llm_attrib.attributors.prefilter import Prefilter, group_queries
from llm_attrib.store import atomic_path, write_json

HERE = Path(__file__).parent
CORPUS = dict(n_entities=240, docs_per_fact=3, n_distractors=600, alias_fraction=1 / 3, held_out_fraction=1 / 3,
              decoys_per_fact=1, seed=0)
N_QUERIES, K = (60, 600), 20


def main() -> None:
    torch.set_num_threads(1)
    corpus = generate_facts(**CORPUS)
    tokenizer = train_tokenizer([d["text"] for d in corpus.documents], 1024, model_max_length=64)
    model = tiny_gpt2(len(tokenizer), 64, 128, 2, 4, 0, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    train = [{"id": d["id"], "text": d["text"]} for d in corpus.documents]
    attributor = InfluenceAttributor(CausalLMAdapter(model, tokenizer), "ekfac", batch_size=32).fit(train)
    index = Prefilter(index="bm25", candidates=K).fit(train)
    results, lines = [], []
    for n_query in N_QUERIES:
        step = len(corpus.queries) // n_query
        queries = [{k: q[k] for k in ("id", "prompt", "completion")} for q in corpus.queries[::step][:n_query]]
        start = time.perf_counter()
        full = attributor.score(queries, train)
        rows = [{"setting": "every document", "seconds": time.perf_counter() - start, "records": len(train),
                 "pairs": len(train) * len(queries), "max_abs_difference": 0.0}]
        chosen = index.select(queries)
        for label, chunk in (("union of all candidates", len(queries)), ("per-query groups of 16", 16),
                             ("one query per group", 1)):
            prefilter = Prefilter(attributor, index="bm25", candidates=K, query_chunk=chunk)
            prefilter.index = index.index  # the fitted BM25 index, shared
            start = time.perf_counter()
            got = prefilter.score(queries, train)
            seconds = time.perf_counter() - start
            finite = torch.isfinite(got.values)
            groups = group_queries(chosen, chunk)
            rows.append({"setting": label, "seconds": seconds, "records": got.metadata["n_scored"],
                         "pairs": sum(len(set(chosen[g].flatten().tolist())) * len(g) for g in groups),
                         "max_abs_difference": float((got.values[finite] - full.values[finite]).abs().max())})
        results.append({"n_query": len(queries), "rows": rows, "scale": float(full.values.abs().max())})
        lines += [f"**{len(queries)} queries** (largest |score| {results[-1]['scale']:.3g}):", "",
                  "| scored | seconds | speed-up | records scored | query–record pairs | max abs diff vs every document |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['setting']} | {r['seconds']:.1f} | {rows[0]['seconds'] / r['seconds']:.1f}× | {r['records']} | "
                  f"{r['pairs']} | {r['max_abs_difference']:.2g} |" for r in rows] + [""]
    write_json(HERE / "speed.json", {"corpus": CORPUS, "n_train": len(train), "K": K, "results": results})
    lines = [f"Per-query prefilter on {len(train)} documents (N / K = {len(train) // K}), BM25 K = {K}, EK-FAC on a "
             "tiny GPT-2, 1 CPU thread (`python -m eval.facts.speed`).", ""] + lines
    with atomic_path(HERE / "speed.md") as tmp:
        tmp.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
