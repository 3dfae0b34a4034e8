"""The grid's Markdown: every cell × variant (LDS ± s.e., seconds), the paired differences per option, the choice.

Written between the results markers of ``eval/grid/README.md`` (`llm_attrib.evaluation.suite.write_readme`, atomic).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from llm_attrib.evaluation.suite import write_readme

COMMAND = "python -m eval.grid"


def _fmt(value: float | None, stderr: float | None = None, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.{digits}f}" + ("" if stderr is None or math.isnan(stderr) else f" ± {stderr:.{digits}f}")


def cell_table(rows: Sequence[dict[str, Any]], cells: Sequence[str]) -> str:
    """One line per variant: grid mean, then each cell's LDS ± s.e. and seconds (fit + score; a shared fit counted
    in full), sorted by grid mean (EK-FAC) then K-FAC."""
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    variant: dict[str, dict[str, str]] = {}
    for row in rows:
        by_method.setdefault(row["method"], {})[row["cell"]] = row
        variant[row["method"]] = row["variant"]

    def mean_of(method: str) -> float:
        values = [by_method[method][c].get("lds", math.nan) for c in cells if c in by_method[method]]
        return sum(values) / len(values) if len(values) == len(cells) else math.nan

    order = sorted(by_method, key=lambda m: (variant[m]["curvature"] != "ekfac", -mean_of(m)))
    header = ["curvature", "modules", "fisher", "eos", "damping", "normalize", "grid mean"] + [
        f"{c} LDS (s)" for c in cells]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in order:
        v = variant[method]
        line = [v["curvature"], v["modules"], v["fisher"], v["eos"], v["damping"], v["normalize"], _fmt(mean_of(method))]
        for c in cells:
            row = by_method[method].get(c, {})
            line.append(f"error: {row['error'][:40]}" if "error" in row else
                        f"{_fmt(row.get('lds'), row.get('lds_stderr'))} ({row.get('seconds', math.nan):.1f})")
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def choice_table(results: dict[str, Any], cells: Sequence[str]) -> str:
    """Per option: each value's paired difference against the default (at the candidate's other options)."""
    header = ["option", "value", "Δ vs default ± s.e.", "> 2 s.e.?"] + [f"{c} Δ" for c in cells] + ["chosen"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for choice in results["choices"]:
        lines.append(f"| {choice['option']} | {choice['default']} (default) | 0 | | " + " | " * len(cells)
                     + ("**yes**" if choice["value"] == choice["default"] else "") + " |")
        for value, p in choice["against_default"].items():
            per_cell = [_fmt(*p["per_cell"][c][:2]) if c in p["per_cell"] else "–" for c in cells]
            lines.append("| " + " | ".join([choice["option"], value, _fmt(p["mean"], p["stderr"]),
                                            "yes" if value in choice["beats_default"] else "no", *per_cell,
                                            "**yes**" if choice["value"] == value else ""]) + " |")
    return "\n".join(lines)


def write_report(readme: Path, results: dict[str, Any], cells: Sequence[str]) -> None:
    candidate = ", ".join(f"{k}={v}" for k, v in results["candidate"].items())
    chosen = ", ".join(f"{c['option']}={c['value']}" for c in results["choices"])
    changed = [c for c in results["choices"] if c["value"] != c["default"]]
    sizes = results["config"]
    notes = (
        f"Measured by `{COMMAND}` in {results['seconds']:.0f} s ({results['machine']}); cells: "
        f"{', '.join(cells)}; {sizes['n_train']} training records and {sizes['n_query']} queries per cell, LDS over "
        f"{sizes['n_subsets']} subsets × {sizes['seeds_per_subset']} seeds (α = {sizes['alpha']}). "
        f"Candidate (highest grid mean among EK-FAC variants): {candidate}. "
        f"The rule chose: {chosen}"
        + (f" — departing from the default for {', '.join(c['option'] for c in changed)}." if changed
           else " — every current default stays.")
        + "".join(f" **{name} is not in this table**: its ground truth had {u['subsets_done']} of {u['of']} subsets "
                  "when this was written (cached; rerun the command to finish it)." for name, u in
                  results.get("unfinished", {}).items())
        + " Sign: positive = the training example raises the query's log Pr(completion | prompt)."
    )
    table = ("### Paired differences per option (at the candidate's other options)\n\n" + choice_table(results, cells)
             + "\n\n### Every cell × variant: LDS ± s.e. over queries (seconds: fit + score)\n\n"
             + cell_table(results["rows"], cells))
    write_readme(readme, table, notes)
