"""`python -m eval.estimators [flags]`: evaluate the estimator candidates on the grid's built cells and write
``eval/estimators/README.md`` and ``results.json`` (flags: `eval.estimators.config.EstimatorsConfig`)."""

from __future__ import annotations

import sys

from eval.entry import config_main
from eval.estimators.run import run
from eval.estimators.config import EstimatorsConfig


def main(argv: list[str] | None = None) -> int:
    return config_main("python -m eval.estimators", __doc__, EstimatorsConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
