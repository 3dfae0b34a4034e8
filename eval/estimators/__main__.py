"""`python -m eval.estimators [flags]`: evaluate the estimator candidates on the grid's built cells and write
``eval/estimators/README.md`` and ``results.json`` (flags: `eval.estimators.config.EstimatorsConfig`)."""

from __future__ import annotations

import argparse
import sys

from eval.estimators.config import EstimatorsConfig
from eval.estimators.run import run
from llm_attrib.errors import UserInputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.estimators", description=__doc__)
    EstimatorsConfig.add_arguments(parser)
    try:
        run(EstimatorsConfig.from_arguments(parser.parse_args(argv)))
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
