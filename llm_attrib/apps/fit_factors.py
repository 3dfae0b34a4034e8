"""`llm-attrib fit-factors`: fit curvature factors once and save them for later `trace` runs (`--factors`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from llm_attrib.apps import options


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("fit-factors", help="fit and save curvature factors", description=__doc__)
    options.add_model_and_data_options(parser)
    options.add_attributor_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.factors:
        args.factors = "factors"
    attributor = options.make_attributor(args, options.make_adapter(args), progress=sys.stderr.isatty())
    attributor.fit(options.load_train(args))
    print(f"{attributor.curvature.kind} factors in {args.factors}")
    return 0
