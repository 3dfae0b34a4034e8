"""`python -m eval.damping_seeds`: fact-retrieval MRR per damping, over several curvature-fit seeds.

The suite's damping rows use one fit seed; with the true Fisher (sampled targets) the fitted factors, and so the
scores at a tiny damping, vary with the seed. This refits K-FAC and EK-FAC on the facts benchmark with
``--seeds`` seeds and scores each fit at every damping of `llm_attrib.attributors.DAMPINGS` (damping is applied
at use, so one fit serves all). Output: ``eval/results/damping_seeds.json`` and a printed table (mean and sd over
seeds of MRR and paraphrase MRR). Positive score = the document raises the query's log-probability.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from llm_attrib.adapters.causal_lm import CausalLMAdapter
    from llm_attrib.attributors import DAMPINGS
    from llm_attrib.attributors.influence import InfluenceAttributor
    from llm_attrib.demo.default import load_default
    from llm_attrib.evaluation.benchmarks import FACTS_RECIPE, facts_benchmark
    from llm_attrib.evaluation.fact_tracing import retrieval_report
    from llm_attrib.store import write_json

    parser = argparse.ArgumentParser(prog="python -m eval.damping_seeds", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--cache-dir", type=Path, default=Path("eval/_runs"))
    parser.add_argument("--out", type=Path, default=Path("eval/results/damping_seeds.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    benchmark = facts_benchmark(args.cache_dir / "demo")
    corpus = load_default(args.cache_dir / "demo", recipe=FACTS_RECIPE).corpus
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    for kind in ("kfac", "ekfac"):
        for seed in range(args.seeds):
            attributor = InfluenceAttributor(CausalLMAdapter(benchmark.model, benchmark.tokenizer, modules="mlp"), kind,
                                             seed=seed).fit(benchmark.train_records)
            for label, value in DAMPINGS.items():
                attributor.curvature.damping = value
                report = retrieval_report(attributor.score(benchmark.query_records, benchmark.train_records), corpus)
                runs.setdefault(kind, {}).setdefault(label, []).append(
                    {"seed": seed, "mrr": report["all/mrr"], "paraphrase_mrr": report["paraphrase/mrr"]})
    summary = {
        kind: {label: {key: {"mean": statistics.mean(r[key] for r in rows), "sd": statistics.stdev(r[key] for r in rows)}
                       for key in ("mrr", "paraphrase_mrr")} for label, rows in by_damping.items()}
        for kind, by_damping in runs.items()
    }
    write_json(args.out, {"seeds": args.seeds, "summary": summary, "runs": runs,
                          "sign": "positive score = the document raises the query's log-probability"})
    print("| curvature | damping | MRR mean (sd) | paraphrase MRR mean (sd) |\n|---|---|---|---|")
    for kind, by_damping in summary.items():
        for label, s in by_damping.items():
            print(f"| {kind} | {label} | {s['mrr']['mean']:.3f} ({s['mrr']['sd']:.3f}) | "
                  f"{s['paraphrase_mrr']['mean']:.3f} ({s['paraphrase_mrr']['sd']:.3f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
