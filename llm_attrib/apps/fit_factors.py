"""`llm-attrib fit-factors`: fit curvature factors once and save them for later `trace` runs (`--factors`)."""

from __future__ import annotations

import argparse
from typing import Any

from llm_attrib.apps import options
from llm_attrib.distributed import is_main_process


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("fit-factors", help="fit and save curvature factors", description=__doc__)
    options.add_model_and_data_options(parser)
    options.add_attributor_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit (every rank its shard, under several processes) and say where the factors are (rank 0)."""
    if not args.factors:
        args.factors = "factors"
    adapter = options.make_adapter(args)
    attributor = options.make_attributor(args, adapter)
    attributor.fit(options.load_train(args, adapter))
    if is_main_process():
        print(f"{attributor.curvature.kind} factors in {args.factors}")
    return 0
