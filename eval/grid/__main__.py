"""`python -m eval.grid [flags]`: build every cell's ground truth, evaluate every variant, apply the rule, write
``results.json`` and the tables of ``README.md`` (flags: `eval.grid.config.GridConfig`, see ``--help``)."""

from __future__ import annotations

import argparse
import sys

from eval.grid.config import GridConfig
from eval.grid.run import run_grid
from llm_attrib.errors import UserInputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.grid", description=__doc__)
    GridConfig.add_arguments(parser)
    try:
        run_grid(GridConfig.from_arguments(parser.parse_args(argv)))
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
