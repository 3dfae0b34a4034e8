"""`python -m eval.magic [flags]`: run the MAGIC benchmark (`eval.magic.run`), write ``results.json`` and
``README.md`` beside it (flags: `eval.magic.config.BenchConfig`, see ``--help``)."""

from __future__ import annotations

import sys

from eval.entry import config_main
from eval.magic.config import BenchConfig


def main(argv: list[str] | None = None) -> int:
    from eval.magic.run import run_benchmark  # imported on use, as before: --help stays light

    return config_main("python -m eval.magic", __doc__, BenchConfig, run_benchmark, argv)


if __name__ == "__main__":
    sys.exit(main())
