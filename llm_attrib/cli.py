"""`llm-attrib` command line: each subcommand lives next to the code it drives and registers itself here.

A subcommand module exposes ``add_parser(subparsers)``, which adds its parser and sets ``func``
(``args -> int`` exit status). Errors that are the user's to fix (`UserInputError`, and argparse's own) print one
line and exit with status 2.
Launched by ``torchrun`` or ``accelerate launch``, every subcommand runs inside the launcher's process group
(`process_group_from_environment`); rank 0 prints results and writes shared outputs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn, Sequence

from llm_attrib.distributed import process_group_from_environment
from llm_attrib.errors import UserInputError

SUBCOMMAND_MODULES = {
    "quickstart": "llm_attrib.apps.quickstart",
    "fit-factors": "llm_attrib.apps.fit_factors",
    "train": "llm_attrib.apps.train",
    "trace": "llm_attrib.apps.trace",
    "audit": "llm_attrib.apps.audit",
    "run": "llm_attrib.apps.run",
    "value": "llm_attrib.valuation.cli",
    "eval": "llm_attrib.evaluation.cli",
}
"""Each subcommand's module; `build_parser` imports only the one a command line names."""


class OneLineParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose errors are one line pointing at ``--help``, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for the command line ``argv``: when it names a subcommand, only that subcommand's module is
    imported (``trace`` imports no evaluation, valuation or demo module); otherwise (no ``argv``, ``--help``, a typo)
    every subcommand's, to list them all."""
    parser = OneLineParser(prog="llm-attrib", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    named = [argv[0]] if argv and argv[0] in SUBCOMMAND_MODULES else list(SUBCOMMAND_MODULES)
    for command in named:
        importlib.import_module(SUBCOMMAND_MODULES[command]).add_parser(subparsers)
    for command in subparsers.choices.values():
        command.set_defaults(command_parser=command)  # names the subcommand in errors about stray arguments
    return parser


def quiet_libraries() -> None:
    """Hide transformers/datasets loading bars and notices: the command's own output and errors stay readable."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its load errors are raised, reworded, anyway
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    quiet_libraries()
    try:
        for config_class in getattr(args, "configs", ()):  # options are checked before any model or data loads
            config_class.from_arguments(args)
        with process_group_from_environment():
            return int(args.func(args) or 0)
    except UserInputError as error:
        print(f"llm-attrib {args.command}: error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
