"""Training documents scored per second: ours vs kronfluence, same model, data and queries, for several N.

Run: ``python -m eval.scale.throughput [N ...]`` (default 1000 4000 16000; updates those sizes' rows
of ``eval/scale/throughput.json``).
Fit (EK-FAC factors on all N documents) and score (N documents × the queries) are timed separately; the
prefilter row scores only the TF-IDF top-``K`` candidates of each query. Both libraries fit the *empirical*
Fisher, so their scores must agree (sampled targets would differ by sampling noise alone): each row records the
Spearman correlation of our scores with kronfluence's (mean over queries) and their top-10 overlap, so speed is
compared at equal accuracy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from eval.peers.kronfluence_peer import KronfluencePeer
from eval.scale.common import agreement_with_kronfluence, attributor, corpus_of_size, demo, timer
from llm_attrib.attributors.prefilter import Prefilter
from llm_attrib.store import write_json

N_QUERIES = 8
CANDIDATES = 100
def main(sizes: list[int]) -> None:
    bundle = demo()
    queries = bundle.corpus.queries[:N_QUERIES]
    rows = []
    for n in sizes:
        train = corpus_of_size(bundle.train_records, n)
        times: dict[str, float] = {}
        ours = attributor(bundle, fisher="empirical")
        with timer(times, "ours_fit"):
            ours.fit(train)
        with timer(times, "ours_score"):
            our_scores = ours.score(queries, train)
        prefilter = Prefilter(index="tfidf", candidates=CANDIDATES)
        with timer(times, "prefilter_fit"):
            prefilter.fit(train)
        with timer(times, "prefilter_score"):
            scored = prefilter.around(ours).score(queries, train).metadata["n_scored"]
        peer = KronfluencePeer(bundle.model, bundle.tokenizer, batch_size=16, fisher="empirical")
        with timer(times, "kronfluence_fit"):
            peer.fit(train)
        with timer(times, "kronfluence_score"):
            peer_scores = peer.score(queries, train)
        agreement = agreement_with_kronfluence(our_scores.values, peer_scores.values)
        rows.append({"n_train": n, "n_queries": len(queries), "prefilter_scored": scored, **times, **agreement,
                     "ours_docs_per_s": n / times["ours_score"],
                     "prefilter_docs_per_s": n / times["prefilter_score"],
                     "kronfluence_docs_per_s": n / times["kronfluence_score"]})
        print(json.dumps(rows[-1]), flush=True)
        save(rows)


def save(rows: list[dict]) -> None:
    """Replace the rows of the sizes just measured in ``throughput.json`` (atomically: a crash loses no row)."""
    path = Path(__file__).with_name("throughput.json")
    measured = {row["n_train"] for row in rows}
    kept = [row for row in (json.loads(path.read_text()) if path.exists() else []) if row["n_train"] not in measured]
    write_json(path, sorted(kept + rows, key=lambda row: row["n_train"]))


if __name__ == "__main__":
    main([int(n) for n in sys.argv[1:]] or [1000, 4000, 16000])
