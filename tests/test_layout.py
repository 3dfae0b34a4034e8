"""The package's layout: what a command imports, and no import cycles between modules."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llm_attrib"
SUITES = ("llm_attrib.evaluation", "llm_attrib.valuation", "llm_attrib.demo")


def imported_after(code: str) -> list[str]:
    """The ``llm_attrib`` modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    listing = "import json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('llm_attrib'))))"
    script = f"{code}\n{listing}"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def in_suites(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith(SUITES)]


def test_trace_imports_no_evaluation_valuation_or_demo_module():
    modules = imported_after(
        "import contextlib, io\n"
        "from llm_attrib.cli import build_parser, main\n"
        "build_parser(['trace'])\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['trace', '--help'])")
    assert "llm_attrib.apps.trace" in modules
    assert in_suites(modules) == []


def test_every_subcommand_is_registered_by_its_module():
    from llm_attrib.cli import SUBCOMMAND_MODULES, build_parser

    registered = build_parser()._subparsers._group_actions[0].choices
    assert list(registered) == list(SUBCOMMAND_MODULES)
    for command in SUBCOMMAND_MODULES:
        assert list(build_parser([command])._subparsers._group_actions[0].choices) == [command]


@pytest.mark.parametrize("module", ["llm_attrib.attributors.airrep", "llm_attrib.retraining.lds",
                                    "llm_attrib.retraining.measure", "llm_attrib.retraining.runs"])
def test_retraining_and_airrep_import_no_evaluation_module(module):
    assert [m for m in imported_after(f"import {module}") if m.startswith("llm_attrib.evaluation")] == []


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The ``llm_attrib`` modules that ``path`` imports when it is imported: statements at module level (not in a
    function, nor under ``if TYPE_CHECKING``); ``from package import name`` counts ``package.name`` when that is a
    module, else ``package``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    body = list(ast.parse(path.read_text()).body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.Try, ast.With)):
            body.extend(node.body)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            body.extend(node.body + node.orelse)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    """Each ``llm_attrib`` module → the ``llm_attrib`` modules it imports at module level."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): module_level_imports(path, modules) for path in paths}


def mutual(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted({tuple(sorted((a, b))) for a, imports in graph.items() for b in imports if a in graph.get(b, ())})


def test_no_two_modules_import_each_other_at_module_level():
    graph = import_graph()
    assert graph["llm_attrib.apps.trace"] and "llm_attrib.retraining.lds" in graph["llm_attrib.attributors.airrep"]
    assert mutual(graph) == []


def test_no_two_subpackages_import_each_other_at_module_level():
    """Modules grouped by subpackage (``llm_attrib.attributors``, ``llm_attrib.evaluation``, top-level modules on
    their own): AirRep's use of the LDS machinery once made attributors and evaluation import each other."""
    part = lambda module: ".".join(module.split(".")[:2])  # noqa: E731
    grouped: dict[str, set[str]] = {}
    for module, imports in import_graph().items():
        grouped.setdefault(part(module), set()).update(part(m) for m in imports if part(m) != part(module))
    assert grouped["llm_attrib.evaluation"] >= {"llm_attrib.attributors", "llm_attrib.retraining"}
    assert mutual(grouped) == []


def test_every_eval_module_imports():
    """Every benchmark script under eval/ imports (a renamed helper of one benchmark broke another's command once);
    peers' optional libraries may be missing, and their modules say so themselves."""
    import importlib

    root = PACKAGE.parent
    for path in sorted((root / "eval").rglob("*.py")):
        if "_runs" in path.parts or "peers" in path.parts:
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        importlib.import_module(module.removesuffix(".__init__"))
