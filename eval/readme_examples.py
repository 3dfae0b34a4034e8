"""`python -m eval.readme_examples [--diff]`: regenerate the example outputs in README.md from their commands.

An example output in README.md is a fenced block between two markers,

    <!-- example: llm-attrib quickstart | demo build 1a2b3c4d5e6f7a8b -->
    ```
    ...the command's standard output...
    ```
    <!-- /example -->

and this script reruns each marked command (``llm-attrib ...`` as ``python -m llm_attrib.cli ...``, with the user
cache, so the demo is built first where it is missing) and writes its standard output into the block, with the
fingerprint of the demo model that produced it. The demo is trained on this machine's CPU and training is not
bit-exact across CPUs, so another machine's build can print other scores, ranks and even another completion;
tests/test_readme.py states what it compares when the builds differ. ``--diff`` prints what would change instead of
writing.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE = re.compile(
    r"<!-- example: (?P<command>[^|>]+?)(?: \| demo build (?P<build>[0-9a-f]+))? -->\n"
    r"```\n(?P<output>.*?)```\n<!-- /example -->",
    re.S,
)


@dataclass(frozen=True)
class Example:
    """One marked block: the command, the demo build it was produced with (None if not recorded), its text."""

    command: str
    build: str | None
    output: str
    span: tuple[int, int]


def examples(text: str) -> list[Example]:
    """The marked example blocks of a README's ``text``, in order."""
    return [Example(m["command"].strip(), m["build"], m["output"], m.span()) for m in EXAMPLE.finditer(text)]


def run_command(command: str, env: dict[str, str] | None = None) -> str:
    """``command``'s standard output; ``llm-attrib ...`` runs as ``python -m llm_attrib.cli ...`` of this Python."""
    argv = shlex.split(command)
    if argv[0] == "llm-attrib":
        argv = [sys.executable, "-m", "llm_attrib.cli", *argv[1:]]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=README.parent)
    if done.returncode != 0:
        raise RuntimeError(f"`{command}` exited with status {done.returncode}:\n{done.stderr[-4000:]}")
    return done.stdout


def demo_build() -> str:
    """The fingerprint of the demo model in the user cache (building it if absent)."""
    from llm_attrib.demo.default import load_default

    return str(load_default().info["model_fingerprint"])


def block(command: str, output: str, build: str) -> str:
    body = output if output.endswith("\n") else output + "\n"
    return f"<!-- example: {command} | demo build {build} -->\n```\n{body}```\n<!-- /example -->"


def regenerate(text: str) -> str:
    """``text`` with every example block replaced by its command's current output and demo build."""
    found = examples(text)
    outputs = [run_command(example.command) for example in found]
    build = demo_build()
    for example, output in reversed(list(zip(found, outputs))):
        start, stop = example.span
        text = text[:start] + block(example.command, output, build) + text[stop:]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.readme_examples", description=__doc__.splitlines()[0])
    parser.add_argument("--diff", action="store_true", help="print the changes instead of writing README.md")
    args = parser.parse_args(argv)
    old = README.read_text()
    if not examples(old):
        print(f"{README}: no <!-- example: ... --> blocks", file=sys.stderr)
        return 1
    new = regenerate(old)
    if args.diff:
        diff = difflib.unified_diff(old.splitlines(True), new.splitlines(True), "README.md", "README.md")
        sys.stdout.writelines(diff)
        return 0
    if new != old:
        README.write_text(new)
    print(f"{README}: {len(examples(new))} example(s) {'updated' if new != old else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
