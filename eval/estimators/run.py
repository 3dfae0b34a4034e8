"""Evaluate the candidates on the grid's cells, compare each at its best damping with EK-FAC at its best, report.

Per cell and candidate: one fit (timed), then a score at every damping of `eval.grid.variants.DAMPINGS` (each
timed) and its per-query LDS against the cell's cached ground truth; cached as JSON under
``cache_dir/<cell>/<candidate>.json`` (delete it to recompute). A candidate's best damping maximises its grid-mean
LDS (mean over cells of the per-cell mean over queries, `eval.grid.rule.grid_mean`), and so does EK-FAC's. Paired
Δ (`eval.grid.rule.paired`): per cell, the mean over queries of (candidate − EK-FAC) per-query LDS, with its
standard error; the grid Δ is the mean over cells, its s.e. ``sqrt(Σ per-cell s.e.²) / cells``. Ensembles have no
single ``curvature`` for the suite's shared-fit damping switch (`eval.grid.evaluate`), hence this loop. Cost: the candidate's fit + score seconds at its damping over EK-FAC's,
summed over cells (wall clock on a shared CPU: noisy), and its records passed forward and backward over EK-FAC's
(`Candidate.passes`, exact). Target (issue 9): Δ ≥ 0.05 and Δ > 2 s.e. at ≤ 3× EK-FAC's cost (both measures), with
no training beyond the user's own run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from eval.estimators.candidates import CANDIDATES, set_damping
from eval.estimators.config import EstimatorsConfig
from eval.grid.cells import Cell, build_cell
from eval.grid.config import GridConfig
from eval.grid.rule import grid_mean, paired
from eval.grid.variants import DAMPINGS
from llm_attrib.evaluation.lds import evaluate_lds
from llm_attrib.store import write_json

BASELINE = "ekfac"
TARGET = {"delta": 0.05, "z": 2.0, "cost": 3.0}


def _log(message: str) -> None:
    print(f"[estimators {time.strftime('%H:%M:%S')}] {message}", flush=True)


def truth_ready(cell: Cell) -> bool:
    """Whether the cell's LDS ground truth is complete on disk (this command never builds it)."""
    return len(list((cell.cache_dir / "lds").glob("trial_*.safetensors"))) >= cell.config.n_subsets


def evaluate(cell: Cell, name: str, path: Path) -> dict[str, Any]:
    """Fit candidate ``name`` on the cell once, score at every damping; per-query LDS and seconds (cached)."""
    if path.exists():
        return json.loads(path.read_text())
    benchmark, truth = cell.benchmark, cell.truth()
    training_before = benchmark.runs.seconds
    attributor = CANDIDATES[name].build(benchmark)
    start = time.perf_counter()
    attributor.fit(benchmark.train_records)
    fit_seconds = time.perf_counter() - start
    dampings = {}
    for label, value in DAMPINGS.items():
        set_damping(attributor, value)
        start = time.perf_counter()
        scores = attributor.score(benchmark.query_records, benchmark.train_records)
        seconds = time.perf_counter() - start
        lds = evaluate_lds(scores, truth)
        dampings[label] = {"score_seconds": seconds, "lds": lds.mean, "stderr": lds.stderr,
                           "per_query": [None if math.isnan(v) else v for v in lds.per_query.tolist()]}
        _log(f"{cell.name} {name} damping={label}: LDS {lds.mean:.3f} ± {lds.stderr:.3f} "
             f"(fit {fit_seconds:.1f} s, score {seconds:.1f} s)")
    result = {"cell": cell.name, "candidate": name, "n_train": len(benchmark.train_records),
              "n_query": len(benchmark.query_records), "fit_seconds": fit_seconds,
              "training_seconds": benchmark.runs.seconds - training_before, "dampings": dampings}
    write_json(path, result)
    return result


def _per_query(result: dict[str, Any], damping: str) -> torch.Tensor:
    return torch.tensor([math.nan if v is None else v for v in result["dampings"][damping]["per_query"]],
                        dtype=torch.float64)


def summarise(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """``results[candidate][cell]`` → per candidate: grid means per damping, best damping, paired Δ, cost."""
    cells = sorted(set.intersection(*(set(per_cell) for per_cell in results.values())))
    per_query = {name: {label: {c: _per_query(results[name][c], label) for c in cells} for label in DAMPINGS}
                 for name in results}
    means = {name: {label: grid_mean(per_query[name][label]) for label in DAMPINGS} for name in results}
    best = {name: max(DAMPINGS, key=lambda label: means[name][label]) for name in results}

    def seconds(name: str, cell: str) -> float:
        r = results[name][cell]
        return r["fit_seconds"] + r["dampings"][best[name]]["score_seconds"]

    base_seconds = sum(seconds(BASELINE, c) for c in cells)
    summary: dict[str, Any] = {"cells": cells, "baseline": BASELINE, "target": TARGET, "candidates": {}}
    sizes = [(results[BASELINE][c]["n_train"], results[BASELINE][c]["n_query"]) for c in cells]
    for name in results:
        difference = paired(per_query[name][best[name]], per_query[BASELINE][best[BASELINE]])
        delta, se = difference.mean, difference.stderr
        per_cell = {c: {"lds": results[name][c]["dampings"][best[name]]["lds"], "delta": difference.per_cell[c][0],
                        "stderr": difference.per_cell[c][1], "n_query": difference.per_cell[c][2],
                        "seconds": seconds(name, c), "training_seconds": results[name][c]["training_seconds"]}
                    for c in cells}
        cost = sum(seconds(name, c) for c in cells) / base_seconds
        passes = (sum(CANDIDATES[name].passes(n, q) for n, q in sizes)
                  / sum(CANDIDATES[BASELINE].passes(n, q) for n, q in sizes))
        training = sum(p["training_seconds"] for p in per_cell.values())
        summary["candidates"][name] = {
            "description": CANDIDATES[name].description, "passes": passes, "training_seconds": training,
            "extra_training": CANDIDATES[name].extra_training,
            "grid_mean_lds": means[name], "best_damping": best[name], "lds": means[name][best[name]],
            "delta": delta, "stderr": se, "z": delta / se if se > 0 else math.nan, "cost": cost,
            "meets_target": bool(delta >= TARGET["delta"] and delta > TARGET["z"] * se
                                 and max(cost, passes) <= TARGET["cost"] and not CANDIDATES[name].extra_training),
            "per_cell": per_cell}
    return summary


def _table(summary: dict[str, Any]) -> str:
    rows = ["| candidate | damping | grid-mean LDS | paired Δ vs EK-FAC | s.e. | Δ/s.e. | seconds (× EK-FAC) | "
            "passes (× EK-FAC) | extra training | target |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary["candidates"].items():
        rows.append(f"| {name} | {s['best_damping']} | {s['lds']:.3f} | {s['delta']:+.3f} | {s['stderr']:.3f} | "
                    f"{s['z']:+.1f} | {s['cost']:.2f} | {s['passes']:.2f} | {'yes' if s['extra_training'] else 'no'} | "
                    f"{'met' if s['meets_target'] else 'not met'} |")
    rows += ["", "Grid-mean LDS at every damping:", "",
             "| candidate | " + " | ".join(DAMPINGS) + " |", "|---|" + "---|" * len(DAMPINGS)]
    for name, s in summary["candidates"].items():
        rows.append(f"| {name} | " + " | ".join(f"{s['grid_mean_lds'][label]:.3f}" for label in DAMPINGS) + " |")
    rows += ["", "Per cell (each candidate at its best damping): LDS, paired Δ ± s.e., fit + score seconds:", "",
             "| candidate | " + " | ".join(summary["cells"]) + " |", "|---|" + "---|" * len(summary["cells"])]
    for name, s in summary["candidates"].items():
        rows.append(f"| {name} | " + " | ".join(
            f"{p['lds']:.3f} ({p['delta']:+.3f} ± {p['stderr']:.3f}; {p['seconds']:.0f} s)"
            for p in s["per_cell"].values()) + " |")
    return "\n".join(rows)


def write_report(summary: dict[str, Any], out_dir: Path) -> None:
    """``results.json`` and the table between the markers of ``README.md`` (the prose around them is kept)."""
    write_json(out_dir / "results.json", summary)
    readme = out_dir / "README.md"
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = readme.read_text() if readme.exists() else f"# Estimators\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    from llm_attrib.store import atomic_path

    with atomic_path(readme) as tmp:
        tmp.write_text(f"{head}{start}\n{_table(summary)}\n{end}{tail}")


def run(config: EstimatorsConfig) -> dict[str, Any]:
    torch.set_num_threads(config.threads)
    names = list(config.candidates or CANDIDATES)
    if BASELINE not in names:
        names.insert(0, BASELINE)
    grid = GridConfig(data_dir=config.data_dir, cache_dir=config.grid_cache_dir, datasets=config.datasets,
                      depths=config.depths)
    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
    for data in config.datasets:
        for depth in config.depths:
            cell_name = f"{data}-L{depth}"
            folder = config.cache_dir / cell_name
            cached = {name: folder / f"{name}.json" for name in names}
            if config.report_only or all(path.exists() for path in cached.values()):
                for name, path in cached.items():
                    if path.exists():
                        results[name][cell_name] = json.loads(path.read_text())
                continue
            cell = build_cell(grid, data, depth)
            if not truth_ready(cell):
                _log(f"{cell.name}: ground truth not built yet (run python -m eval.grid --truth-only); skipped")
                continue
            for name in names:
                results[name][cell.name] = evaluate(cell, name, cached[name])
    results = {name: per_cell for name, per_cell in results.items() if per_cell}
    if BASELINE not in results:
        _log("no cell evaluated yet")
        return {}
    summary = summarise(results)
    write_report(summary, config.out_dir)
    _log(f"wrote {config.out_dir / 'README.md'} over {len(summary['cells'])} cells")
    return summary
