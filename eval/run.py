"""`python -m eval.run [flags]`: the evaluation suite, same flags as `llm-attrib eval` (see --help)."""

from __future__ import annotations

import argparse
import sys

from llm_attrib.evaluation.cli import configure


def main(argv: list[str] | None = None) -> int:
    args = configure(argparse.ArgumentParser(prog="python -m eval.run", description=__doc__)).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
