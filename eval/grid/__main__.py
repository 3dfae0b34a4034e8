"""`python -m eval.grid [flags]`: build every cell's ground truth, evaluate every variant, apply the rule, write
``results.json`` and the tables of ``README.md`` (flags: `eval.grid.config.GridConfig`, see ``--help``)."""

from __future__ import annotations

import sys

from eval.entry import config_main
from eval.grid.run import run_grid
from eval.grid.config import GridConfig


def main(argv: list[str] | None = None) -> int:
    return config_main("python -m eval.grid", __doc__, GridConfig, run_grid, argv)


if __name__ == "__main__":
    sys.exit(main())
