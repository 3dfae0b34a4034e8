"""`python -m eval.magic [flags]`: run the MAGIC benchmark (`eval.magic.run`), write ``results.json`` and
``README.md`` beside it (flags: `eval.magic.config.BenchConfig`, see ``--help``)."""

from __future__ import annotations

import argparse
import sys

from eval.magic.config import BenchConfig
from llm_attrib.errors import UserInputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.magic", description=__doc__)
    BenchConfig.add_arguments(parser)
    try:
        from eval.magic.run import run_benchmark

        run_benchmark(BenchConfig.from_arguments(parser.parse_args(argv)))
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
