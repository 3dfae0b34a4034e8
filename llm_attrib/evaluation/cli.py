"""`llm-attrib eval`: run the evaluation suite (`llm_attrib.evaluation.suite`) and rewrite its results table."""

from __future__ import annotations

import argparse

from llm_attrib.distributed import require_one_process
from llm_attrib.evaluation.suite import SuiteConfig, run_suite


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the suite's flags (the `SuiteConfig` fields) to ``parser``; ``parser.set_defaults(func=...)`` runs it."""
    SuiteConfig.add_arguments(parser)
    parser.set_defaults(func=run, configs=(SuiteConfig,))
    return parser


def run(args: argparse.Namespace) -> int:
    require_one_process("the suite trains and scores its small models in one process and rewrites one results table")
    run_suite(SuiteConfig.from_arguments(args))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    configure(subparsers.add_parser("eval", help=__doc__.splitlines()[0], description=__doc__))
