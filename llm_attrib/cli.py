"""`llm-attrib` command line: each subcommand lives next to the code it drives and registers itself here.

A subcommand module exposes ``add_parser(subparsers)``, which adds its parser and sets ``func``
(``args -> int`` exit status). Errors that are the user's to fix (`UserInputError`) print one line.
Launched by ``torchrun`` or ``accelerate launch``, every subcommand runs inside the launcher's process group
(`process_group_from_environment`); rank 0 prints results and writes shared outputs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from llm_attrib.distributed import process_group_from_environment
from llm_attrib.errors import UserInputError

SUBCOMMAND_MODULES = (
    "llm_attrib.apps.quickstart",
    "llm_attrib.apps.fit_factors",
    "llm_attrib.apps.trace",
    "llm_attrib.apps.audit",
    "llm_attrib.apps.run",
    "llm_attrib.valuation.cli",
    "llm_attrib.evaluation.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-attrib", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def quiet_libraries() -> None:
    """Hide transformers/datasets loading bars and notices: the command's own output and errors stay readable."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        with process_group_from_environment():
            return int(args.func(args) or 0)
    except UserInputError as error:
        print(f"llm-attrib {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
