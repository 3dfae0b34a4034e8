"""`llm-attrib quickstart`: the main job on the embedded default, with no download.

Builds (once, ~1 CPU minute, then cached) a tiny GPT-2 trained on a generated corpus of synthetic facts,
lets it answer a question, and traces the answer back to the training documents: by default with the hybrid
method (BM25 recalls each question's 20 candidates, EK-FAC influence on the answer tokens re-ranks them, the two
rankings are fused), the better fact tracer of `eval/facts/README.md`; ``--method influence`` scores every document
with EK-FAC influence alone.
Documents that state the fact by construction are marked, so you can see the attribution is right, and one line
says how often that happens over all the demo's questions (each traced with its true answer), so that one question
is not taken for the rate.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

import torch

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.apps.options import show_progress
from llm_attrib.apps.trace import format_report, trace
from llm_attrib.attributors.hybrid import HybridAttributor
from llm_attrib.attributors.influence import InfluenceAttributor, InfluenceConfig
from llm_attrib.demo.facts import FactCorpus
from llm_attrib.distributed import is_main_process, local_device, main_process_first
from llm_attrib.scores import Scores


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("quickstart", help="trace a generation of the embedded demo model",
                                   description=__doc__)
    parser.add_argument("--query", type=int, default=0, help="index of the demo question to ask")
    parser.add_argument("--prompt", default=None, help="ask your own question instead")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--method", default="hybrid", choices=("hybrid", "influence"),
                        help="hybrid: BM25 recall, influence re-ranking on the answer, fused ranks (default); "
                             "influence: influence scores of every document")
    parser.add_argument("--curvature", default="ekfac", choices=InfluenceConfig.choices("curvature"),
                        help="curvature of the influence preconditioner (default: ekfac)")
    parser.add_argument("--cache-dir", default=None, help="where the demo model is built (default: user cache)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build or load the demo, trace one answer, print the report (rank 0 builds and prints)."""
    from llm_attrib.demo.default import load_default

    progress = show_progress()
    if is_main_process():
        print("building or loading the demo model (first run: about a minute)...", file=sys.stderr)
    with main_process_first():  # rank 0 builds the demo, the other ranks load it
        bundle = load_default(args.cache_dir, progress=progress)
    query = bundle.corpus.queries[args.query % len(bundle.corpus.queries)]
    prompt = args.prompt or query["prompt"]
    adapter = CausalLMAdapter(bundle.model.to(local_device()), bundle.tokenizer)
    attributor = InfluenceAttributor(adapter, args.curvature, cache_dir=bundle.path / "factors", progress=progress)
    recall = None
    if args.method == "hybrid":
        with main_process_first():  # rank 0 fits and saves the BM25 index, the other ranks load it
            recall = HybridAttributor().fit_or_load(bundle.path / "factors" / "hybrid-index.safetensors",
                                                    bundle.train_records)
    report = trace(attributor, bundle.train_records, prompt, top_k=args.top_k, max_new_tokens=8,
                   stop=(".", "\n"), prefilter=recall)
    if not is_main_process():
        return 0
    relevant = set() if args.prompt else bundle.corpus.relevant(query["id"])
    questions = [{"prompt": q["prompt"], "completion": q["completion"]} for q in bundle.corpus.queries]
    scorer = attributor if recall is None else recall.around(attributor)
    rate = StatedRate.of(scorer.score(questions, bundle.train_records), bundle.corpus, args.top_k)
    if args.json:
        print(json.dumps({**report.to_dict(), "relevant": sorted(relevant), "all_questions": rate.to_dict()},
                         indent=2, default=str))
        return 0
    if not args.prompt:
        print(f"expected answer: {query['completion']!r}; documents stating the fact are marked with *")
    print(format_report(report, marks={doc_id: "  *" for doc_id in relevant}))
    print(f"\n{rate}")
    return 0


@dataclass(frozen=True)
class StatedRate:
    """How many of each question's top ``k`` documents state its fact, averaged over all ``n_questions`` of a corpus
    (``mean``), with the same count for a random ranking (``chance`` = mean of ``k * relevant / n_train``)."""

    k: int
    n_questions: int
    mean: float
    chance: float

    @classmethod
    def of(cls, scores: Scores, corpus: FactCorpus, k: int) -> "StatedRate":
        """``scores`` ``[n_questions, n_train]``, row ``i`` for ``corpus.queries[i]`` traced with its true answer."""
        top = torch.topk(scores.values, min(k, scores.values.shape[1]), dim=1).indices.tolist()
        stated = [corpus.relevant(q["id"]) for q in corpus.queries]
        hits = [len(relevant & {scores.train_ids[i] for i in row}) for relevant, row in zip(stated, top)]
        n_train = len(scores.train_ids)
        return cls(k, len(hits), sum(hits) / len(hits), sum(k * len(r) / n_train for r in stated) / len(stated))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"over all {self.n_questions} demo questions, each traced with its true answer: on average "
                f"{self.mean:.2f} of the top {self.k} documents state the fact (a random ranking: {self.chance:.2f})")
