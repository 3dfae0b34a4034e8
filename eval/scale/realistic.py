"""Ours vs kronfluence on a randomly initialised ~100M-parameter Llama: the layer sizes of a real model.

Run: ``python -m eval.scale.realistic [--docs 64] [--queries 8]`` (CPU, one thread: ~25 min; writes
``realistic.json``).
The demo model's layers are tiny (512×129); here each of the 36 tracked MLP layers is 768×2048 or 2048×768, so
the per-layer costs (covariances of 2048², per-example gradients of 1.6M entries, query matrices of
``n_q × 57M`` floats) are those of a GPT-2-small-sized model. Training documents are 64-token passages of
tiny Shakespeare (``../shared/data``), queries are held-out passages split into prompt and completion. Both
libraries fit EK-FAC on the empirical Fisher (so their scores must agree; the agreement is recorded) with the
heuristic damping (0.1 × mean eigenvalue per layer in both: at 1e-8, far below most eigenvalues of 64 documents'
Fisher, the two libraries agreed only to Spearman 0.62 in a trial run — float32 rounding amplified by the
inverse), batch size 8, float32 model; fit and score are timed separately, in one run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from eval.peers.kronfluence_peer import KronfluencePeer
from eval.scale.common import agreement_with_kronfluence, timer
from llm_attrib.adapters import CausalLMAdapter
from llm_attrib.attributors.influence import InfluenceAttributor
from llm_attrib.demo.model import tiny_llama
from llm_attrib.demo.tokenizer import train_tokenizer
from llm_attrib.store import write_json

SHAKESPEARE = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"
CONFIG = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
              num_key_value_heads=12, max_position_embeddings=128)
VOCAB = 8192
WORDS_PER_PASSAGE = 48


def passages(n: int) -> list[str]:
    """``n`` consecutive passages of ``WORDS_PER_PASSAGE`` words of tiny Shakespeare."""
    if not SHAKESPEARE.exists():
        raise SystemExit(f"{SHAKESPEARE} is missing: this benchmark needs the shared data folder beside the checkout")
    words = SHAKESPEARE.read_text().split()
    return [" ".join(words[i * WORDS_PER_PASSAGE:(i + 1) * WORDS_PER_PASSAGE]) for i in range(n)]


def setup(n_docs: int, n_queries: int) -> tuple[torch.nn.Module, Any, list[dict], list[dict]]:
    """The random Llama (float32), a tokenizer trained on tiny Shakespeare, ``n_docs`` training passages and
    ``n_queries`` held-out passages split into a 32-word prompt and the rest as completion."""
    torch.set_num_threads(1)
    texts = passages(n_docs + n_queries)
    tokenizer = train_tokenizer(SHAKESPEARE.read_text().splitlines(), vocab_size=VOCAB, model_max_length=128)
    model = tiny_llama(vocab_size=len(tokenizer), seed=0, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **CONFIG)
    train = [{"id": f"doc{i}", "text": t} for i, t in enumerate(texts[:n_docs])]
    queries = []
    for i, text in enumerate(texts[n_docs:]):
        words = text.split()
        queries.append({"id": f"query{i}", "prompt": " ".join(words[:32]), "completion": " " + " ".join(words[32:])})
    return model, tokenizer, train, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--queries", type=int, default=8)
    args = parser.parse_args()
    model, tokenizer, train, queries = setup(args.docs, args.queries)

    times: dict[str, float] = {}
    ours = InfluenceAttributor(CausalLMAdapter(model, tokenizer), "ekfac", damping="heuristic", batch_size=8,
                               fisher="empirical")
    with timer(times, "ours_fit"):
        ours.fit(train)
    with timer(times, "ours_score"):
        our_scores = ours.score(queries, train).values
    del ours
    peer = KronfluencePeer(model, tokenizer, damping=None, batch_size=8, fisher="empirical")
    with timer(times, "kronfluence_fit"):
        peer.fit(train)
    with timer(times, "kronfluence_score"):
        peer_scores = peer.score(queries, train).values.double()
    tracked = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".mlp." in n]
    row = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "tracked_parameters": sum(m.weight.numel() for m in tracked),
        "tracked_layers": len(tracked),
        "n_train": args.docs, "n_queries": args.queries,
        "tokens_per_doc": sum(len(tokenizer(r["text"])["input_ids"]) for r in train) / len(train),
        **times,
        "fit_speedup": times["kronfluence_fit"] / times["ours_fit"],
        "score_speedup": times["kronfluence_score"] / times["ours_score"],
        **agreement_with_kronfluence(our_scores, peer_scores),
    }
    print(json.dumps(row, indent=2))
    write_json(Path(__file__).with_name("realistic.json"), row)


if __name__ == "__main__":
    main()
