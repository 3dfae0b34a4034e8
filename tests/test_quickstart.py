"""`llm-attrib quickstart`, the README's main job: end to end on a fresh cache, and the claim it lets a user check —
the documents that state a fact are among the records traced for it — as a rate over all the demo's questions.

The demo is trained on the CPU at hand and training is not bit-exact across CPUs, so nothing here asserts a score,
a rank or a generated answer of one build: the structure of the report, its agreement with the corpus's ground truth
and with a second run on the same build, and rates with room below what was measured.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import torch

from llm_attrib.demo.training import torch_threads

RATE = re.compile(r"over all 100 demo questions, each traced with its true answer: on average \d\.\d\d of the top 5 "
                  r"documents state the fact \(a random ranking: 0\.\d\d\)")
ROW = re.compile(r"^\s*(?P<rank>\d+)\s+(?P<score>\S+)\s+(?P<id>d\d{5})\s+(?P<text>.*?)(?P<mark>  \*)?$")


def quickstart(cache, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLM_ATTRIB_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "llm_attrib.cli", "quickstart", *args], capture_output=True,
                          text=True, env=env, timeout=900)


def test_quickstart_builds_the_demo_on_a_fresh_cache_and_prints_the_marked_report(tmp_path):
    from llm_attrib.demo.default import BUILD_FILE, load_default

    cache = tmp_path / "cache"
    first = quickstart(cache)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "building or loading the demo model" in first.stderr and "Traceback" not in first.stderr
    [build] = list(cache.iterdir())  # one finished build folder; no staging or retired folder left behind
    assert build.name.startswith("demo-") and (build / BUILD_FILE).exists()
    assert not [p for p in cache.rglob("*") if p.name.endswith((".tmp", ".building", ".old"))]

    bundle = load_default(cache)
    query = bundle.corpus.queries[0]
    relevant = set(bundle.corpus.relevant(query["id"]))
    texts = {document["id"]: document["text"] for document in bundle.corpus.documents}
    lines = first.stdout.splitlines()
    assert lines[0] == f"expected answer: {query['completion']!r}; documents stating the fact are marked with *"
    assert lines[1] == f"prompt:     {query['prompt']!r}"
    assert lines[2].startswith("completion: '") and lines[2][13:-1].strip()  # the model's answer, not empty
    assert lines[3].startswith("method:     hybrid-influence-ekfac+bm25-rrf (") and "positive = raises" in lines[3]
    assert lines[4] == "" and lines[5].split() == ["rank", "score", "id", "text"]
    rows = [ROW.match(line) for line in lines[6:16:2]]
    assert len(lines) == 6 + 2 * 5 + 2 and all(rows), lines
    assert lines[16] == "" and RATE.fullmatch(lines[17]), lines[17]  # the rate over all questions, not one draw
    assert [int(row["rank"]) for row in rows] == [1, 2, 3, 4, 5]
    scores = [float(row["score"]) for row in rows]
    assert scores == sorted(scores, reverse=True) and len({row["id"] for row in rows}) == 5
    for row, tokens in zip(rows, lines[7:16:2]):
        text = texts[row["id"]]
        assert row["text"] == (text if len(text) <= 80 else text[:77] + "...")
        assert bool(row["mark"]) == (row["id"] in relevant)  # marked exactly when the document states the fact
        assert tokens.strip().startswith("top tokens: '")

    mtime = (build / BUILD_FILE).stat().st_mtime_ns
    again = quickstart(cache)  # loads the build and its factors: the same report, nothing rebuilt
    assert again.returncode == 0 and again.stdout == first.stdout
    assert (build / BUILD_FILE).stat().st_mtime_ns == mtime and list(cache.iterdir()) == [build]


def test_the_documents_that_state_a_fact_are_traced_at_a_stated_rate_over_all_demo_questions():
    """The quickstart's attribution (the hybrid: BM25 recall, EK-FAC re-ranking, fused ranks; its cached factors) over
    all 100 questions, each traced with its true answer as the completion, with room below what was measured on the
    5-statements build at the default damping (1e-4): a document stating the fact is in the top 5 for at least 90%
    (measured 98%; chance 7.8%) and first for at least 60% (measured 82%; chance 1.6%); the top 5 hold at least 2.5
    stating documents on average (measured 2.98; chance 0.08), the number the quickstart prints (issue 9's target of 4
    is not reached)."""
    from llm_attrib.adapters.causal_lm import CausalLMAdapter
    from llm_attrib.apps.quickstart import StatedRate
    from llm_attrib.attributors.hybrid import HybridAttributor
    from llm_attrib.attributors.influence import InfluenceAttributor
    from llm_attrib.demo.default import load_default

    bundle = load_default()  # the user cache: built by the README's first command (CI) or by the test above
    queries = bundle.corpus.queries
    with torch_threads(1):
        attributor = HybridAttributor(InfluenceAttributor(CausalLMAdapter(bundle.model, bundle.tokenizer), "ekfac",
                                                          cache_dir=bundle.path / "factors"))
        scores = attributor.fit(bundle.train_records).score(
            [{"prompt": q["prompt"], "completion": q["completion"]} for q in queries], bundle.train_records)
    n_train = len(scores.train_ids)
    first = top5 = chance_first = chance_top5 = 0.0
    for row, query in zip(scores.values, queries):
        relevant = set(bundle.corpus.relevant(query["id"]))
        ranked = [scores.train_ids[i] for i in torch.argsort(row, descending=True)[:5].tolist()]
        first += ranked[0] in relevant
        top5 += bool(relevant & set(ranked))
        chance_first += len(relevant) / n_train
        chance_top5 += 1 - math.comb(n_train - len(relevant), 5) / math.comb(n_train, 5)
    n = len(queries)
    rate = StatedRate.of(scores, bundle.corpus, 5)
    assert n == 100 and chance_top5 / n < 0.1 and chance_first / n < 0.02 and rate.chance < 0.1
    assert top5 / n >= 0.9 and first / n >= 0.6 and rate.mean >= 2.5, (top5 / n, first / n, rate.mean)


def test_generation_stops_at_the_end_of_the_answer_for_every_demo_question():
    """The demo's documents are trained with EOS after each (as `train_causal_lm` encodes them), so its greedy answer
    to every question ends with EOS within the quickstart's 8 new tokens: nothing after the answer is traced."""
    from llm_attrib.demo.default import load_default

    bundle = load_default()
    tokenizer, eos = bundle.tokenizer, bundle.tokenizer.eos_token_id
    with torch_threads(1), torch.no_grad():
        for question in bundle.corpus.queries:
            ids = tokenizer(question["prompt"], return_tensors="pt")["input_ids"]
            new = bundle.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                        do_sample=False, pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:]
            assert eos in new.tolist(), (question["prompt"], tokenizer.decode(new))
