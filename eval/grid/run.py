"""The grid run: cells → ground truth → every variant's LDS → the rule → results.json and README tables."""

from __future__ import annotations

import platform
import time
from typing import Any

import torch

from eval.grid.cells import Cell, cells
from eval.grid.config import GridConfig
from eval.grid.evaluate import evaluate
from eval.grid.report import write_report
from eval.grid.rule import apply_rule
from eval.grid.variants import Variant, factory, grid_variants
from llm_attrib.store import write_json


def _log(message: str) -> None:
    print(f"[grid {time.strftime('%H:%M:%S')}] {message}", flush=True)


def variant_rows(cell: Cell, variants: list[Variant]) -> list[dict[str, Any]]:
    """Every variant's row on ``cell``, one fit group at a time (each group cached when it finishes)."""
    query_ids = [r["id"] for r in cell.benchmark.query_records]
    groups: dict[Any, dict[str, Any]] = {}
    for v in variants:
        f = factory(v, query_ids)
        groups.setdefault(f.fit_key, {})[v.name] = f
    by_name = {v.name: v for v in variants}
    rows = []
    for group in groups.values():
        for row in evaluate(cell, group):
            rows.append({**row, "variant": {"curvature": by_name[row["method"]].curvature,
                                            **by_name[row["method"]].options()}})
    return rows


def run_grid(config: GridConfig) -> dict[str, Any]:
    """Build the cells and their ground truth; unless ``truth_only``, evaluate the variants, apply the rule and write
    ``results.json`` and ``README.md`` into ``config.out_dir``."""
    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    grid = cells(config)
    unfinished = {}
    if config.finished_only:
        unfinished = {c.name: c.trials_done() for c in grid if c.trials_done() < config.n_subsets}
        grid = [c for c in grid if c.name not in unfinished]
        _log(f"unfinished cells left out: {unfinished}")
    truth_seconds = {}
    for cell in grid:
        start = time.perf_counter()
        cell.truth(progress=lambda done, total, name=cell.name: _log(f"{name} LDS ground truth {done}/{total}"))
        truth_seconds[cell.name] = time.perf_counter() - start
        _log(f"{cell.name}: ground truth ready in {truth_seconds[cell.name]:.0f} s")
    if config.truth_only:
        return {}
    variants = grid_variants()
    rows = []
    for cell in grid:
        _log(f"{cell.name}: {len(variants)} variants")
        rows += variant_rows(cell, variants)
    names = [cell.name for cell in grid]
    candidate, means, choices = apply_rule(rows, names)
    results = {
        "config": config.to_dict(),
        "cells": {c.name: {"settings": c.benchmark.settings, "n_train": len(c.benchmark.train_records),
                           "n_query": len(c.benchmark.query_records)} for c in grid},
        "unfinished": {name: {"subsets_done": done, "of": config.n_subsets} for name, done in unfinished.items()},
        "truth_seconds": truth_seconds,
        "rows": rows,
        "candidate": candidate,
        "grid_means": means,
        "choices": [{"option": c.option, "value": c.value, "default": c.default, "candidate": c.candidate,
                     "beats_default": list(c.beats_default),
                     "against_default": {v: {"mean": p.mean, "stderr": p.stderr, "per_cell": p.per_cell}
                                         for v, p in c.against_default.items()}} for c in choices],
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "seconds": time.perf_counter() - started,
        "sign": "positive score = the training example raises the query's log Pr(completion | prompt)",
    }
    write_json(config.out_dir / "results.json", results)
    write_report(config.out_dir / "README.md", results, names)
    _log(f"done in {results['seconds']:.0f} s")
    return results
