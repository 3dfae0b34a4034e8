"""The defaults grid (issue 9): data sets × model depths, full-length records, LDS ground truth per cell.

API for reuse (e.g. to test a new estimator on the same cells and ground truth)::

    from eval.grid import GridConfig, cells, evaluate
    for cell in cells(GridConfig()):              # trains each cell's model; ground truth on first use (cached)
        rows = evaluate(cell, {"mine": my_factory})  # suite-style factories; rows carry lds, lds_per_query, seconds

`python -m eval.grid` runs every variant (`eval.grid.variants`), applies the rule (`eval.grid.rule`) and writes
``eval/grid/results.json`` and ``eval/grid/README.md``.
"""

from eval.grid.cells import Cell, build_cell, cells
from eval.grid.config import GridConfig
from eval.grid.evaluate import evaluate

__all__ = ["Cell", "GridConfig", "build_cell", "cells", "evaluate"]
