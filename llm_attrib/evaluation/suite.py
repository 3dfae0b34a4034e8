"""`llm-attrib eval` / `python -m eval.run`: every registered method on every benchmark, one results table.

For each benchmark (`llm_attrib.evaluation.benchmarks`) and each method (`llm_attrib.attributors.ATTRIBUTORS`
plus peers such as kronfluence), the method is fitted on the training records and scores the queries; the
scores are evaluated with the benchmark's metrics and timed (fit + score, wall-clock seconds). Ground truth
for LDS and LOO is cached under ``cache_dir`` (resumable). Influence variants that differ only in damping share
one fitted curvature per benchmark (the registry's ``fit_key``); their ``seconds`` still count that fit. Factories get
the benchmark's training runs (``training=``, `llm_attrib.retraining.runs.TrainingRuns`, cached under ``cache_dir``):
TracIn's checkpoints and the TRAK ensemble's models; the time spent training those is reported as
``training_seconds``, apart from ``seconds``. Results go to ``<out_dir>/results/<benchmark>.json`` and a
Markdown table between ``<!-- results:start -->`` and ``<!-- results:end -->`` in ``<out_dir>/README.md``.
Sign: positive score = the training example raises the query's log-probability.
"""

from __future__ import annotations

import importlib
import math
import platform
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from llm_attrib.attributors import ATTRIBUTORS, TRAK_ENSEMBLE, AttributorFactory
from llm_attrib.config import Config, ConfigError, at_least, in_open_interval, option
from llm_attrib.errors import UserInputError
from llm_attrib.evaluation.benchmarks import (
    Benchmark,
    facts_benchmark,
    loo_benchmark,
    mislabel_benchmark,
    provenance_benchmark,
    roleplay_benchmark,
)
from llm_attrib.evaluation.lds import evaluate_lds
from llm_attrib.evaluation.loo import LOOGroundTruth, evaluate_loo, loo_ground_truth
from llm_attrib.retraining.lds import LDSGroundTruth, lds_ground_truth
from llm_attrib.retraining.measure import LogLikelihoodMeasure
from llm_attrib.retraining.runs import N_CHECKPOINTS
from llm_attrib.scores import Scores
from llm_attrib.store import atomic_path, data_fingerprint, write_json

ROLEPLAY_FILE, SHAKESPEARE_FILE = "gpteacher_roleplay.json", "tinyshakespeare.txt"
RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


DATA_FILES: dict[str, tuple[str, ...]] = {"roleplay": (ROLEPLAY_FILE,), "provenance": (SHAKESPEARE_FILE, ROLEPLAY_FILE),
                                          "loo": (ROLEPLAY_FILE,), "mislabel": (ROLEPLAY_FILE,)}
"""The files of ``data_dir`` (real text) that each benchmark is built from (the fact corpus is generated)."""


@dataclass(frozen=True)
class SuiteConfig(Config):
    """Sizes and paths of one suite run (``llm-attrib eval``'s flags are its fields)."""

    data_dir: Path = option(Path("../shared/data"), f"folder with {ROLEPLAY_FILE} and {SHAKESPEARE_FILE}")
    out_dir: Path = option(Path("eval"), "where README.md and results/ are written")
    cache_dir: Path = option(Path("eval/_runs"), "ground-truth and demo-model caches")
    n_train: int = option(160, "role-play training records", check=at_least(2))
    n_query: int = option(32, "role-play held-out queries", check=at_least(1))
    n_subsets: int = option(64, "role-play LDS subsets (M)", check=at_least(0))
    alpha: float = option(0.5, "LDS subset fraction", check=in_open_interval(0.0, 1.0))
    seeds_per_subset: int = option(1, "models trained per LDS subset (outcomes averaged)", check=at_least(1))
    facts_subsets: int = option(0, "LDS subsets on the fact corpus (0 = skip; each costs a full retraining)",
                                check=at_least(0))
    loo_train: int = option(48, "training records of the LOO model", check=at_least(2))
    loo_removed: int = option(16, "examples left out one at a time (0 = skip the LOO ground truth)", check=at_least(0))
    loo_seeds: int = option(8, "models per LOO trial, paired across trials (seed noise cancels)", check=at_least(1))
    mislabel_train: int = option(160, "training records of the mislabel-detection model", check=at_least(2))
    mislabel_fraction: float = option(0.15, "fraction of training completions swapped",
                                      check=in_open_interval(0.0, 1.0))
    methods: tuple[str, ...] = option((), "comma-separated method names (default: all)")
    peers: tuple[str, ...] = option(("eval.peers.kronfluence_peer",), "comma-separated peer modules")
    benchmarks: tuple[str, ...] = option(("roleplay", "facts", "provenance", "loo", "mislabel"),
                                         "comma-separated benchmarks")
    seed: int = option(0, "seeds the benchmarks, the subsets and the methods")
    threads: int = option(1, "torch intra-op threads (0 = leave torch's default; 1 is fastest for these tiny models)",
                          check=at_least(0))

    def validate(self) -> None:
        unknown = sorted(set(self.benchmarks) - set(BENCHMARK_BUILDERS))
        if unknown:
            raise ConfigError("benchmarks", f"must be among {', '.join(BENCHMARK_BUILDERS)}, not {unknown[0]!r}")

    def check_data(self) -> None:
        """Refuse a run whose benchmarks need real text that ``data_dir`` does not hold (one line, before any work)."""
        for name in self.benchmarks:
            for file in DATA_FILES.get(name, ()):
                if not (self.data_dir / file).is_file():
                    raise UserInputError(f"benchmark {name} needs {file} in {self.data_dir} (the real text of "
                                         "../shared/data): pass --data-dir, or choose --benchmarks facts")


def _log(message: str) -> None:
    print(f"[eval {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _final_model_only(make: Callable[[Any, Any], Any]) -> AttributorFactory:
    """A registry-style factory from a peer's ``make(model, tokenizer)`` (peers use no training history)."""
    return lambda model, tokenizer, training=None: make(model, tokenizer)


def method_table(config: SuiteConfig) -> dict[str, AttributorFactory]:
    """The registry plus the peers' ``PEERS`` tables (a peer module that cannot be imported is reported and skipped)."""
    table = dict(ATTRIBUTORS)
    for module_name in config.peers:
        try:
            table.update({name: _final_model_only(make)
                          for name, make in importlib.import_module(module_name).PEERS.items()})
        except ImportError as error:
            _log(f"peer {module_name} skipped: {error}")
    if config.methods:
        unknown = set(config.methods) - set(table)
        if unknown:
            raise UserInputError(f"unknown method(s) {sorted(unknown)} in --methods; known: {', '.join(sorted(table))}")
        table = {name: table[name] for name in config.methods}
    return table


@dataclass
class MethodRun:
    """A fitted attributor, its scores of the benchmark's queries (None without queries) and wall-clock seconds
    (``training_seconds``: spent training or loading the benchmark's runs, not counted in ``fit_seconds``)."""

    attributor: Any
    scores: Scores | None
    fit_seconds: float
    score_seconds: float
    shared_fit: bool = False
    training_seconds: float = 0.0


def _set_damping(attributor: Any, damping: float | str | None) -> None:
    """Point a fitted influence attributor at another damping (applied at use: the fitted factors are unchanged)."""
    from llm_attrib.attributors.influence import DEFAULT_DAMPING
    from llm_attrib.curvature import resolve_damping

    value = DEFAULT_DAMPING if damping is None else damping
    resolve_damping(value, torch.ones(1))  # refuse a bad value before scoring
    attributor.curvature.damping = value


def run_method(factory: AttributorFactory, benchmark: Benchmark, fitted: dict[Any, tuple[Any, float]] | None = None) -> MethodRun:
    """Fit on the benchmark's training records and score its queries, timing both.

    With ``fitted`` (a per-benchmark dict), factories sharing a ``fit_key`` reuse the first one's fitted
    attributor at their own ``damping``; the shared fit's seconds are reported as theirs too.
    """
    key = getattr(factory, "fit_key", None)
    training_before = benchmark.runs.seconds
    if fitted is not None and key is not None and key in fitted:
        attributor, fit_seconds = fitted[key]
        _set_damping(attributor, getattr(factory, "damping", None))
        shared = True
    else:
        start = time.perf_counter()
        attributor = factory(benchmark.model, benchmark.tokenizer, training=benchmark.runs).fit(benchmark.train_records)
        fit_seconds, shared = time.perf_counter() - start, False
        if fitted is not None and key is not None:
            fitted[key] = (attributor, fit_seconds)
    training_seconds = benchmark.runs.seconds - training_before
    start = time.perf_counter()
    scores = attributor.score(benchmark.query_records, benchmark.train_records) if benchmark.query_records else None
    return MethodRun(attributor, scores, fit_seconds - training_seconds, time.perf_counter() - start, shared,
                     training_seconds)


def _truth_dir(config: SuiteConfig, prefix: str, benchmark: Benchmark, *sizes: Any) -> Path:
    """A ground-truth cache folder per benchmark settings and sizes, so another size gets its own cache
    (the cache still checks its full metadata and refuses a mismatch)."""
    return config.cache_dir / f"{prefix}-{data_fingerprint({'settings': benchmark.settings, 'sizes': sizes, 'seed': config.seed})[:10]}"


def lds_truth(benchmark: Benchmark, config: SuiteConfig, n_subsets: int) -> LDSGroundTruth:
    return lds_ground_truth(
        benchmark.train_records, benchmark.query_records,
        retrain=benchmark.retrainer, measure=LogLikelihoodMeasure(benchmark.tokenizer),
        train_ids=[r["id"] for r in benchmark.train_records], query_ids=[r["id"] for r in benchmark.query_records],
        n_subsets=n_subsets, alpha=config.alpha, seed=config.seed, seeds_per_subset=config.seeds_per_subset,
        cache_dir=_truth_dir(config, f"lds-{benchmark.name}", benchmark, n_subsets, config.alpha, config.seeds_per_subset),
        settings=benchmark.settings,
        progress=lambda done, total: _log(f"{benchmark.name} LDS ground truth: subset {done}/{total}"),
    )


def loo_truth(benchmark: Benchmark, config: SuiteConfig) -> LOOGroundTruth:
    return loo_ground_truth(
        benchmark.train_records, benchmark.query_records,
        retrain=benchmark.retrainer, measure=LogLikelihoodMeasure(benchmark.tokenizer),
        train_ids=[r["id"] for r in benchmark.train_records], query_ids=[r["id"] for r in benchmark.query_records],
        n_removed=config.loo_removed, seed=config.seed, seeds_per_model=config.loo_seeds,
        cache_dir=_truth_dir(config, f"loo-{benchmark.name}", benchmark, config.loo_removed, config.loo_seeds),
        settings=benchmark.settings,
        progress=lambda done, total: _log(f"{benchmark.name} LOO ground truth: model {done}/{total}"),
    )


def evaluate_benchmark(
    benchmark: Benchmark,
    methods: dict[str, AttributorFactory],
    truth: LDSGroundTruth | None,
    loo: LOOGroundTruth | None = None,
) -> dict[str, Any]:
    """Every method's metrics and seconds on ``benchmark``; a method that fails is recorded with its error.

    ``seconds`` = fit + score (+ the attributor evaluators' own work, e.g. self-influence), with a shared fit
    counted in full for every damping variant; ``fit_seconds`` / ``score_seconds`` split it.
    """
    rows: dict[str, Any] = {}
    fitted: dict[Any, tuple[Any, float]] = {}
    for name, factory in methods.items():
        _log(f"{benchmark.name}: {name}")
        try:
            run = run_method(factory, benchmark, fitted)
            start = time.perf_counter()
            row: dict[str, Any] = {}
            if run.scores is not None:
                damping = run.scores.metadata.get("damping") if run.scores.metadata else None
                if damping is not None:
                    row["damping"] = damping
                if truth is not None:
                    lds = evaluate_lds(run.scores, truth)
                    row.update(lds=lds.mean, lds_stderr=lds.stderr, lds_per_query=lds.per_query.tolist())
                if loo is not None:
                    for method in ("pearson", "spearman"):
                        summary = evaluate_loo(run.scores, loo, method)
                        row.update({f"loo_{method}": summary.mean, f"loo_{method}_stderr": summary.stderr,
                                    f"loo_{method}_per_query": summary.per_query.tolist()})
                for evaluator in benchmark.evaluators:
                    row.update(evaluator(run.scores))
            evaluator_start = time.perf_counter()
            for attributor_evaluator in benchmark.attributor_evaluators:
                row.update(attributor_evaluator(run.attributor))
            extra = time.perf_counter() - evaluator_start
            row.update(seconds=run.fit_seconds + run.score_seconds + extra, fit_seconds=run.fit_seconds,
                       score_seconds=run.score_seconds + extra, shared_fit=run.shared_fit,
                       training_seconds=run.training_seconds)
        except Exception as error:  # a broken method must not sink the whole table
            traceback.print_exc()
            row = {"error": f"{type(error).__name__}: {error}"}
        rows[name] = row
    return rows


BENCHMARK_BUILDERS: dict[str, Callable[[SuiteConfig], Benchmark]] = {
    "roleplay": lambda c: roleplay_benchmark(c.data_dir / ROLEPLAY_FILE, n_train=c.n_train, n_query=c.n_query, seed=c.seed),
    "facts": lambda c: facts_benchmark(c.cache_dir / "demo"),
    "provenance": lambda c: provenance_benchmark(c.data_dir / SHAKESPEARE_FILE, c.data_dir / ROLEPLAY_FILE, seed=c.seed),
    "loo": lambda c: loo_benchmark(c.data_dir / ROLEPLAY_FILE, n_train=c.loo_train, seed=c.seed),
    "mislabel": lambda c: mislabel_benchmark(c.data_dir / ROLEPLAY_FILE, n_train=c.mislabel_train,
                                             fraction=c.mislabel_fraction, seed=c.seed),
}
LDS_SUBSETS: dict[str, Callable[[SuiteConfig], int]] = {
    "roleplay": lambda c: c.n_subsets,
    "facts": lambda c: c.facts_subsets,
    "provenance": lambda c: 0,
    "loo": lambda c: 0,
    "mislabel": lambda c: 0,
}
LOO_BENCHMARKS = ("loo",)


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
                   ("perm. precision", "permutation/precision", None), ("perm. recall", "permutation/recall", None),
                   ("perm. FPR", "permutation/false_positive_rate", None), ("s", "seconds", None)],
    "loo": [("Pearson", "loo_pearson", "loo_pearson_stderr"), ("Spearman", "loo_spearman", "loo_spearman_stderr"),
            ("s", "seconds", None)],
    "mislabel": [("AUROC", "auroc", None), ("P@k", "precision@k", None), ("s", "seconds", None)],
}
TABLES = (("roleplay", "facts"), ("provenance", "loo", "mislabel"))
"""The README's tables: benchmarks side by side (one wide table would not read)."""


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """One table per group of `TABLES` (one row per method, the benchmarks' columns side by side)."""
    groups = [[b for b in group if b in results] for group in TABLES]
    return "\n\n".join(_markdown_group(results, group) for group in groups if group)


def _markdown_group(results: dict[str, dict[str, Any]], benches: list[str]) -> str:
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
    with atomic_path(readme) as tmp:  # a killed run leaves the old README whole
        tmp.write_text(text)


def run_suite(config: SuiteConfig) -> dict[str, dict[str, Any]]:
    """Run every benchmark × method, write JSON results and the README table; return the results."""
    config.check_data()
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)  # tiny models: 1 thread is fastest, and 2 threads on a busy box far slower
    started = time.perf_counter()
    methods = method_table(config)
    results: dict[str, dict[str, Any]] = {}
    for name in config.benchmarks:
        bench_start = time.perf_counter()
        _log(f"building benchmark {name}")
        benchmark = BENCHMARK_BUILDERS[name](config)
        benchmark.runs.cache_dir = _truth_dir(config, f"runs-{name}", benchmark, N_CHECKPOINTS)
        n_subsets = LDS_SUBSETS[name](config)
        truth = lds_truth(benchmark, config, n_subsets) if n_subsets > 0 else None
        loo = loo_truth(benchmark, config) if name in LOO_BENCHMARKS and config.loo_removed > 0 else None
        ground_truth_seconds = time.perf_counter() - bench_start
        results[name] = {
            "benchmark": name,
            "settings": benchmark.settings,
            "n_train": len(benchmark.train_records),
            "n_query": len(benchmark.query_records),
            "lds": None if truth is None else {"n_subsets": n_subsets, "alpha": config.alpha,
                                               "seeds_per_subset": config.seeds_per_subset},
            "loo": None if loo is None else {"n_removed": len(loo.removed), "seeds_per_model": config.loo_seeds},
            "setup_seconds": ground_truth_seconds,
            "methods": evaluate_benchmark(benchmark, methods, truth, loo),
            "sign": "positive score = the training example raises the query's log-probability",
        }
        write_json(config.out_dir / "results" / f"{name}.json", results[name])
    total = time.perf_counter() - started
    notes = (
        f"Measured by `python -m eval.run` in {total:.0f} s on {platform.machine()} "
        f"({torch.get_num_threads()} torch thread{'s' if torch.get_num_threads() != 1 else ''}). "
        + "; ".join(f"{b}: {r['n_train']} train, {r['n_query']} queries"
                    + (f", LDS over {r['lds']['n_subsets']} subsets (α={r['lds']['alpha']})" if r["lds"] else "")
                    + (f", LOO of {r['loo']['n_removed']} removed examples × {r['loo']['seeds_per_model']} seeds"
                       if r.get("loo") else "")
                    + (f", {r['settings']['n_corrupted']} swapped completions (P@k: k = {r['settings']['n_corrupted']})"
                       if "n_corrupted" in r["settings"] else "")
                    for b, r in results.items())
        + ". `s` = seconds to fit + score (damping variants share one fit, counted in each). "
        f"`tracin` sums over {N_CHECKPOINTS} evenly spaced checkpoints of the model's own training run (weights "
        "η = learning rate × steps between checkpoints); `trak-ensemble` averages TRAK over the model and "
        f"{TRAK_ENSEMBLE - 1} models trained from other seeds; training those models is not in `s` "
        "(`training_seconds` in the JSON). Sign: positive = raises the query's log-probability."
    )
    write_readme(config.out_dir / "README.md", markdown_table(results), notes)
    _log(f"done in {total:.0f} s")
    return results
