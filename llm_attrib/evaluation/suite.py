"""`llm-attrib eval` / `python -m eval.run`: every registered method on every benchmark, one results table.

For each benchmark (`llm_attrib.evaluation.benchmarks`) and each method (`llm_attrib.attributors.ATTRIBUTORS`
plus peers such as kronfluence), the method is fitted on the training records and scores the queries; the
scores are evaluated with the benchmark's metrics and timed (fit + score, wall-clock seconds). Ground truth
for LDS is cached under ``cache_dir`` (resumable). Results go to ``<out_dir>/results/<benchmark>.json`` and a
Markdown table between ``<!-- results:start -->`` and ``<!-- results:end -->`` in ``<out_dir>/README.md``.
Sign: positive score = the training example raises the query's log-probability.
"""

from __future__ import annotations

import importlib
import json
import math
import platform
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from llm_attrib.attributors import ATTRIBUTORS, AttributorFactory
from llm_attrib.evaluation.benchmarks import Benchmark, facts_benchmark, provenance_benchmark, roleplay_benchmark
from llm_attrib.evaluation.lds import LDSGroundTruth, evaluate_lds, lds_ground_truth
from llm_attrib.evaluation.retrain import LogLikelihoodMeasure
from llm_attrib.scores import Scores
from llm_attrib.store import write_json

ROLEPLAY_FILE, SHAKESPEARE_FILE = "gpteacher_roleplay.json", "tinyshakespeare.txt"
RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


@dataclass
class SuiteConfig:
    """Sizes and paths of one suite run (the CLI flags)."""

    data_dir: Path
    out_dir: Path
    cache_dir: Path
    n_train: int = 160
    n_query: int = 16
    n_subsets: int = 16
    alpha: float = 0.5
    seeds_per_subset: int = 1
    facts_subsets: int = 0
    methods: tuple[str, ...] = ()
    peers: tuple[str, ...] = ("eval.peers.kronfluence_peer",)
    benchmarks: tuple[str, ...] = ("roleplay", "facts", "provenance")
    seed: int = 0


def _log(message: str) -> None:
    print(f"[eval {time.strftime('%H:%M:%S')}] {message}", flush=True)


def method_table(config: SuiteConfig) -> dict[str, AttributorFactory]:
    """The registry plus the peers' ``PEERS`` tables (a peer module that cannot be imported is reported and skipped)."""
    table = dict(ATTRIBUTORS)
    for module_name in config.peers:
        try:
            table.update(importlib.import_module(module_name).PEERS)
        except ImportError as error:
            _log(f"peer {module_name} skipped: {error}")
    if config.methods:
        unknown = set(config.methods) - set(table)
        if unknown:
            raise ValueError(f"unknown method(s) {sorted(unknown)}; known: {sorted(table)}")
        table = {name: table[name] for name in config.methods}
    return table


def run_method(factory: AttributorFactory, benchmark: Benchmark) -> tuple[Scores, float]:
    """Fit on the benchmark's training records and score its queries; wall-clock seconds of both."""
    start = time.perf_counter()
    attributor = factory(benchmark.model, benchmark.tokenizer).fit(benchmark.train_records)
    scores = attributor.score(benchmark.query_records, benchmark.train_records)
    return scores, time.perf_counter() - start


def lds_truth(benchmark: Benchmark, config: SuiteConfig, n_subsets: int) -> LDSGroundTruth:
    return lds_ground_truth(
        benchmark.train_records, benchmark.query_records,
        retrain=benchmark.retrainer, measure=LogLikelihoodMeasure(benchmark.tokenizer),
        train_ids=[r["id"] for r in benchmark.train_records], query_ids=[r["id"] for r in benchmark.query_records],
        n_subsets=n_subsets, alpha=config.alpha, seed=config.seed, seeds_per_subset=config.seeds_per_subset,
        cache_dir=config.cache_dir / f"lds-{benchmark.name}", settings=benchmark.settings,
        progress=lambda done, total: _log(f"{benchmark.name} LDS ground truth: subset {done}/{total}"),
    )


def evaluate_benchmark(benchmark: Benchmark, methods: dict[str, AttributorFactory], truth: LDSGroundTruth | None) -> dict[str, Any]:
    """Every method's metrics and seconds on ``benchmark``; a method that fails is recorded with its error."""
    rows: dict[str, Any] = {}
    for name, factory in methods.items():
        _log(f"{benchmark.name}: {name}")
        try:
            scores, seconds = run_method(factory, benchmark)
            row: dict[str, Any] = {"seconds": seconds}
            if truth is not None:
                lds = evaluate_lds(scores, truth)
                row.update(lds=lds.mean, lds_stderr=lds.stderr)
            for evaluator in benchmark.evaluators:
                row.update(evaluator(scores))
        except Exception as error:  # a broken method must not sink the whole table
            traceback.print_exc()
            row = {"error": f"{type(error).__name__}: {error}"}
        rows[name] = row
    return rows


BENCHMARK_BUILDERS: dict[str, Callable[[SuiteConfig], Benchmark]] = {
    "roleplay": lambda c: roleplay_benchmark(c.data_dir / ROLEPLAY_FILE, n_train=c.n_train, n_query=c.n_query, seed=c.seed),
    "facts": lambda c: facts_benchmark(c.cache_dir / "demo"),
    "provenance": lambda c: provenance_benchmark(c.data_dir / SHAKESPEARE_FILE, c.data_dir / ROLEPLAY_FILE, seed=c.seed),
}
LDS_SUBSETS: dict[str, Callable[[SuiteConfig], int]] = {
    "roleplay": lambda c: c.n_subsets,
    "facts": lambda c: c.facts_subsets,
    "provenance": lambda c: 0,
}


def _cell(row: dict[str, Any], key: str, stderr: str | None = None) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.3f}"
    return f"{text} ± {row[stderr]:.3f}" if stderr and row.get(stderr) is not None and not math.isnan(row[stderr]) else text


COLUMNS = {
    "roleplay": [("LDS", "lds", "lds_stderr"), ("s", "seconds", None)],
    "facts": [("R@1", "all/recall@1", None), ("R@10", "all/recall@10", None), ("MRR", "all/mrr", None),
              ("R@10 para", "paraphrase/recall@10", None), ("MRR para", "paraphrase/mrr", None),
              ("tail@1", "tail_patch@1", None), ("tail@5", "tail_patch@5", None), ("LDS", "lds", "lds_stderr"),
              ("s", "seconds", None)],
    "provenance": [("precision", "precision", None), ("recall", "recall", None), ("FPR", "false_positive_rate", None),
                   ("s", "seconds", None)],
}


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per method, the benchmarks' columns side by side (`COLUMNS`)."""
    benches = [b for b in COLUMNS if b in results]
    methods = list(dict.fromkeys(m for b in benches for m in results[b]["methods"]))
    header = ["method"] + [f"{b} {label}" for b in benches for label, _, _ in COLUMNS[b]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [method]
        for b in benches:
            row = results[b]["methods"].get(method, {})
            if "error" in row:
                cells += [f"error: {row['error'][:60]}"] + [""] * (len(COLUMNS[b]) - 1)
            else:
                cells += [_cell(row, key, err) for _, key, err in COLUMNS[b]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_readme(readme: Path, table: str, notes: str) -> None:
    """Replace the text between the results markers of ``readme`` (append the markers if absent)."""
    text = readme.read_text() if readme.exists() else ""
    block = f"{RESULTS_START}\n{notes}\n\n{table}\n{RESULTS_END}"
    if RESULTS_START in text and RESULTS_END in text:
        text = re.sub(re.escape(RESULTS_START) + ".*?" + re.escape(RESULTS_END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    readme.write_text(text)


def run_suite(config: SuiteConfig) -> dict[str, dict[str, Any]]:
    """Run every benchmark × method, write JSON results and the README table; return the results."""
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    methods = method_table(config)
    results: dict[str, dict[str, Any]] = {}
    for name in config.benchmarks:
        bench_start = time.perf_counter()
        _log(f"building benchmark {name}")
        benchmark = BENCHMARK_BUILDERS[name](config)
        n_subsets = LDS_SUBSETS[name](config)
        truth = lds_truth(benchmark, config, n_subsets) if n_subsets > 0 else None
        ground_truth_seconds = time.perf_counter() - bench_start
        results[name] = {
            "benchmark": name,
            "settings": benchmark.settings,
            "n_train": len(benchmark.train_records),
            "n_query": len(benchmark.query_records),
            "lds": None if truth is None else {"n_subsets": n_subsets, "alpha": config.alpha,
                                               "seeds_per_subset": config.seeds_per_subset},
            "setup_seconds": ground_truth_seconds,
            "methods": evaluate_benchmark(benchmark, methods, truth),
            "sign": "positive score = the training example raises the query's log-probability",
        }
        write_json(config.out_dir / "results" / f"{name}.json", results[name])
    total = time.perf_counter() - started
    notes = (
        f"Measured by `python -m eval.run` in {total:.0f} s on {platform.machine()} "
        f"({torch.get_num_threads()} torch threads). "
        + "; ".join(f"{b}: {r['n_train']} train, {r['n_query']} queries"
                    + (f", LDS over {r['lds']['n_subsets']} subsets (α={r['lds']['alpha']})" if r["lds"] else "")
                    for b, r in results.items())
        + ". `s` = seconds to fit + score. Sign: positive = raises the query's log-probability."
    )
    write_readme(config.out_dir / "README.md", markdown_table(results), notes)
    _log(f"done in {total:.0f} s")
    return results
