"""`llm-attrib quickstart`: the main job on the embedded default, with no download.

Builds (once, ~1 CPU minute, then cached) a tiny GPT-2 trained on a generated corpus of synthetic facts,
lets it answer a question, and traces the answer back to the training documents with EK-FAC influence.
Documents that state the fact by construction are marked, so you can see the attribution is right.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.apps.options import show_progress
from llm_attrib.apps.trace import format_report, trace
from llm_attrib.attributors.influence import InfluenceAttributor, InfluenceConfig
from llm_attrib.distributed import is_main_process, local_device, main_process_first


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("quickstart", help="trace a generation of the embedded demo model",
                                   description=__doc__)
    parser.add_argument("--query", type=int, default=0, help="index of the demo question to ask")
    parser.add_argument("--prompt", default=None, help="ask your own question instead")
    parser.add_argument("--top-k", type=int, default=5)
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
    report = trace(attributor, bundle.train_records, prompt, top_k=args.top_k, max_new_tokens=8,
                   stop=(".", "\n"))
    if not is_main_process():
        return 0
    relevant = set() if args.prompt else bundle.corpus.relevant(query["id"])
    if args.json:
        print(json.dumps({**report.to_dict(), "relevant": sorted(relevant)}, indent=2, default=str))
        return 0
    if not args.prompt:
        print(f"expected answer: {query['completion']!r}; documents stating the fact are marked with *")
    print(format_report(report, marks={doc_id: "  *" for doc_id in relevant}))
    return 0
