"""The fact-tracing table (issue 9, item 3): ``python -m eval.facts.run`` regenerates ``eval/facts/results.json`` and
the tables of ``eval/facts/README.md``.

1. *Selection* (`ROUNDS`) of the hybrid's fusion, ``K`` and (round 2) gradient normalisation on a corpus of its own
   (`facts_hard_benchmark` with ``SELECTION_SEED``: another corpus, tokenizer and model than the reported ones),
   under the rule stated in the README before each round ran: the configuration with the largest *worst margin* —
   the minimum, over the three query groups and over MRR and R@10, of (hybrid − the better of BM25 and TF-IDF) —
   wins; ties go to the earlier entry.
2. *Report* (`REPORTS`: ``facts``, ``facts-hard`` seed 0, ``facts-hard-seed2``): `METHODS` plus the other fusion and
   K = 100 at the last round's choice; per query group MRR, R@10, alias-document R@10 and paired differences (per
   query, mean ± s.e.) against BM25 and TF-IDF.

Each (benchmark, method) row is cached under ``eval/_runs/facts-table`` (resumable); benchmarks are rebuilt each run
(the facts demo model is cached, a hard model is trained, ~40-80 s). Sign: positive = raises the query's
log-probability; a hybrid's score is a fused rank statistic.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from llm_attrib.attributors import ATTRIBUTORS, HYBRID_NORMALIZE, AttributorFactory, influence_factory
from llm_attrib.attributors.hybrid import HybridAttributor, HybridConfig
from llm_attrib.demo.facts import QUERY_GROUPS
from llm_attrib.evaluation.benchmarks import Benchmark, facts_benchmark, facts_hard_benchmark
from llm_attrib.evaluation.fact_tracing import paired_difference
from llm_attrib.evaluation.suite import evaluate_benchmark, write_readme
from llm_attrib.store import data_fingerprint, write_json

HERE = Path(__file__).parent
CACHE = Path("eval/_runs/facts-table")
METHODS = ("random", "tfidf", "bm25", "grad-dot", "influence-ekfac", "tracin", "prefilter-ekfac", "hybrid")
LEXICAL = ("bm25", "tfidf")
SELECTION_SEED = 1
K = 10


def hybrid_factory(normalize: str | None = None, **options: Any) -> AttributorFactory:
    """A `HybridAttributor` with ``options`` around EK-FAC influence on the default layers (``normalize``: its
    `InfluenceConfig.normalize`, e.g. ``"cosine"``)."""

    def factory(model: Any, tokenizer: Any, training: Any = None) -> Any:
        return HybridAttributor(influence_factory("ekfac", normalize=normalize)(model, tokenizer), **options)

    factory.options = {"normalize": normalize, **options}  # type: ignore[attr-defined]
    return factory


def _name(normalize: str | None, fusion: str, c: float | None, k: int) -> str:
    return (f"hybrid[{'' if normalize is None else f'{normalize},'}{fusion}{'' if c is None else f',c={c:g}'},"
            f"K={k}]")


ROUNDS: dict[str, dict[str, AttributorFactory]] = {
    # round 1 (rule committed in f896866 before it ran): EK-FAC, three fusions, three K
    "selection": {_name(None, fusion, c, k): hybrid_factory(fusion=fusion, candidates=k,
                                                            **({} if c is None else {"rrf_constant": c}))
                  for k in (20, 50, 100) for fusion, c in (("rrf", 60.0), ("rrf", 10.0), ("zscore", None))},
    # round 2 (rule committed before it ran, after round 1 missed the target on the reported seed 0): the gradient
    # stage's per-record normalisation too (TrackStar, Chang et al. 2024: unit-normalised gradients for fact tracing)
    "selection-2": {_name(normalize, fusion, c, k): hybrid_factory(normalize, fusion=fusion, candidates=k,
                                                                   **({} if c is None else {"rrf_constant": c}))
                    for normalize in (None, "cosine", "relative") for k in (20, 50, 100)
                    for fusion, c in (("rrf", 60.0), ("zscore", None))},
}
"""The selection rounds on facts-hard seed `SELECTION_SEED`; the last round's choice is the library default."""
REPORTS = (("facts", lambda: facts_benchmark(CACHE / "demo")),
           ("facts-hard", lambda: facts_hard_benchmark(seed=0)),
           ("facts-hard-seed2", lambda: facts_hard_benchmark(seed=2)))
"""Reported benchmarks: seed 2 was first run after round 2's rule was committed (seed 0 had been seen)."""


def _log(message: str) -> None:
    print(f"[facts {time.strftime('%H:%M:%S')}] {message}", flush=True)


def evaluate(benchmark: Benchmark, methods: dict[str, AttributorFactory], key: str) -> dict[str, Any]:
    """Every method's row on ``benchmark`` (`evaluate_benchmark`), each cached under ``CACHE/key``."""
    folder = CACHE / key
    benchmark.runs.cache_dir = folder / "runs"  # TracIn's checkpoints, trained once
    rows: dict[str, Any] = {}
    for name, factory in methods.items():
        options = getattr(factory, "options", None)
        depends = {"options": options, "defaults": HybridConfig().to_dict(), "registry": HYBRID_NORMALIZE}
        path = folder / f"{name}-{data_fingerprint(depends if name.startswith('hybrid') else options)[:8]}.json"
        if path.exists():
            rows[name] = json.loads(path.read_text())
            continue
        rows[name] = evaluate_benchmark(benchmark, {name: factory}, None)[name]
        if "error" not in rows[name]:
            write_json(path, rows[name])
    return rows


def worst_margin(rows: dict[str, Any], method: str) -> float:
    """min over groups and (MRR, R@10) of ``method`` − the better lexical method (the selection rule)."""
    margins = []
    for group in QUERY_GROUPS:
        for metric in ("mrr", f"recall@{K}"):
            key = f"queries/{group}/{metric}"
            if key in rows[method]:
                margins.append(rows[method][key] - max(rows[lexical][key] for lexical in LEXICAL))
    return min(margins)


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _delta(rows: dict[str, Any], method: str, baseline: str, group: str, metric: str) -> str:
    per_query = rows[method].get(f"queries/{group}/per_query")
    if per_query is None or metric not in per_query:
        return "–"
    mean, stderr = paired_difference(per_query[metric], rows[baseline][f"queries/{group}/per_query"][metric])
    return f"{mean:+.3f} ± {stderr:.3f}"


def tables(name: str, result: dict[str, Any]) -> str:
    """The benchmark's group table and its paired-difference table (Markdown)."""
    rows = result["methods"]
    groups = [g for g in QUERY_GROUPS if any(f"queries/{g}/mrr" in r for r in rows.values())]
    columns = [(g, m) for g in groups for m in ("mrr", f"recall@{K}", f"alias_recall@{K}")
               if any(f"queries/{g}/{m}" in r for r in rows.values())]
    label = {"mrr": "MRR", f"recall@{K}": f"R@{K}", f"alias_recall@{K}": f"alias-doc R@{K}"}
    header = ["method"] + [f"{g} {label[m]}" for g, m in columns] + ["s"]
    lines = [f"**{name}** ({result['n_train']} documents, {result['n_query']} queries: "
             + ", ".join(f"{result['n_per_group'][g]} {g}" for g in groups)
             + f"; greedy accuracy {result['greedy_accuracy']:.2f})", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in rows.items():
        if "error" in row:
            lines.append(f"| {method} | error: {row['error'][:80]} |")
            continue
        cells = [_cell(row.get(f"queries/{g}/{m}")) for g, m in columns]
        lines.append("| " + " | ".join([method, *cells, f"{row['seconds']:.1f}"]) + " |")
    header = ["method"] + [f"{g} Δ{m} vs {b}" for g in groups for b in LEXICAL for m in ("MRR", f"R@{K}")]
    lines += ["", f"Paired differences on **{name}** (per query, mean ± s.e.):", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in rows.items():
        if method in LEXICAL or method == "random" or "error" in row:
            continue
        cells = [_delta(rows, method, b, g, m) for g in groups for b in LEXICAL for m in ("rr", f"recall@{K}")]
        lines.append("| " + " | ".join([method, *cells]) + " |")
    return "\n".join(lines)


def describe(benchmark: Benchmark, rows: dict[str, Any]) -> dict[str, Any]:
    any_row = next(r for r in rows.values() if "error" not in r)
    return {"benchmark": benchmark.name, "settings": benchmark.settings, "n_train": len(benchmark.train_records),
            "n_query": len(benchmark.query_records),
            "n_per_group": {g: any_row.get(f"queries/{g}/n_query", 0) for g in QUERY_GROUPS},
            "greedy_accuracy": benchmark.settings.get("greedy_accuracy"), "methods": rows,
            "sign": "positive score = the training example raises the query's log-probability"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("select", "report", "all"), default="all")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results_path = HERE / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    if args.stage in ("select", "all"):
        _log("selection benchmark: facts-hard, seed %d" % SELECTION_SEED)
        benchmark = facts_hard_benchmark(seed=SELECTION_SEED)
        key = f"select-{data_fingerprint(benchmark.settings)[:10]}"
        for label, grid in ROUNDS.items():
            rows = evaluate(benchmark, {name: ATTRIBUTORS[name] for name in LEXICAL} | grid, key)
            margins = {name: worst_margin(rows, name) for name in grid if "error" not in rows[name]}
            chosen = max(margins, key=lambda name: (margins[name], -list(grid).index(name)))
            results[label] = {**describe(benchmark, rows), "worst_margin": margins, "chosen": chosen,
                              "chosen_options": grid[chosen].options}  # type: ignore[attr-defined]
            _log(f"{label}: chosen {chosen} (worst margin {margins[chosen]:+.3f})")
    if args.stage in ("report", "all"):
        if any(label not in results for label in ROUNDS):
            raise SystemExit("run --stage select first")
        chosen = results[list(ROUNDS)[-1]]["chosen_options"]
        first = results[list(ROUNDS)[0]]["chosen_options"]
        other = "zscore" if chosen["fusion"] == "rrf" else "rrf"
        methods = {name: ATTRIBUTORS[name] for name in METHODS} | {
            f"hybrid-{other}": hybrid_factory(**{**chosen, "fusion": other}),
            "hybrid K=100": hybrid_factory(**{**chosen, "candidates": 100})}
        if first != chosen:
            methods["hybrid round 1"] = hybrid_factory(**first)
        for name, build in REPORTS:
            _log(f"report benchmark: {name}")
            benchmark = build()
            rows = evaluate(benchmark, methods, f"{name}-{data_fingerprint(benchmark.settings)[:10]}")
            results[name] = describe(benchmark, rows)
    write_json(results_path, results)
    body = [tables(name, results[name]) for name, _ in REPORTS if name in results]
    for label in ROUNDS:
        if label not in results:
            continue
        selection = results[label]
        body.append(f"{label} (facts-hard, seed {SELECTION_SEED}; worst margin = min over groups and MRR/R@10 of "
                    "hybrid − the better lexical method):\n\n| configuration | worst margin |\n|---|---|\n"
                    + "\n".join(f"| {name}{' **(chosen)**' if name == selection['chosen'] else ''} | {m:+.3f} |"
                                for name, m in selection["worst_margin"].items()))
    body.append(tables(f"selection: facts-hard seed {SELECTION_SEED}", results[list(ROUNDS)[-1]]))
    notes = (f"Measured by `python -m eval.facts.run` on CPU (1 torch thread). `hybrid` = the registry's default "
             f"(EK-FAC, normalize={HYBRID_NORMALIZE}; {', '.join(f'{k}={v}' for k, v in HybridConfig().to_dict().items())}); "
             "`hybrid round 1` = round 1's choice; groups and columns as above.")
    write_readme(HERE / "README.md", "\n\n".join(body), notes)
    _log("done")


if __name__ == "__main__":
    main()
