"""`python -m eval.run [flags]`: the evaluation suite, the same command and flags as `llm-attrib eval` (see --help)."""

from __future__ import annotations

import sys

from llm_attrib.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
