"""The command-line entry of an eval benchmark folder: its `Config`'s fields as flags, one-line errors."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from llm_attrib.config import Config
from llm_attrib.errors import UserInputError


def config_main(prog: str, description: str | None, config_class: type[Config], run: Callable[[Any], Any],
                argv: list[str] | None = None) -> int:
    """Parse ``argv`` into a ``config_class`` (flags generated from its fields) and ``run(config)``; a
    `UserInputError` (a `ConfigError` too) prints one line and returns 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    config_class.add_arguments(parser)
    try:
        run(config_class.from_arguments(parser.parse_args(argv)))
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
