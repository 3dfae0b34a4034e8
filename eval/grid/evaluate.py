"""`evaluate(cell, factories) -> rows`: each factory's LDS on one cell, cached per cell (resumable).

A factory is suite-style (`llm_attrib.attributors.AttributorFactory`: ``factory(model, tokenizer, training=None)``);
factories with the same ``fit_key`` share one fit at their own ``damping`` (`llm_attrib.evaluation.suite.run_method`).
A row: ``{"cell", "method", "lds", "lds_stderr", "lds_per_query", "seconds", "fit_seconds", "score_seconds", ...}``
(or ``"error"``); ``seconds`` counts a shared fit in full. Rows are kept in ``<cell cache>/rows.json`` by method
name, so a re-run scores only the methods not there yet (delete the file after changing a method).
Sign: positive score = the training example raises the query's log-probability, so a good method has LDS > 0.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from eval.grid.cells import Cell
from llm_attrib.attributors import AttributorFactory
from llm_attrib.evaluation.suite import evaluate_benchmark
from llm_attrib.store import write_json

ROWS = "rows.json"


def evaluate(cell: Cell, factories: Mapping[str, AttributorFactory], *, cache: bool = True) -> list[dict[str, Any]]:
    """Rows of ``factories`` on ``cell`` (its ground truth is built first if not cached), in the given order."""
    path = cell.cache_dir / ROWS
    done: dict[str, Any] = json.loads(path.read_text()) if cache and path.exists() else {}
    todo = {name: f for name, f in factories.items() if name not in done}
    if todo:
        truth = cell.truth()
        for name, row in evaluate_benchmark(cell.benchmark, todo, truth).items():
            done[name] = row
            if cache and "error" not in row:
                write_json(path, done)
    return [{"cell": cell.name, "method": name, **done[name]} for name in factories]
