"""THE RULE (eval/grid/README.md states it; it was committed before the grid ran): choose each default by the grid
mean of per-cell LDS, departing from the library's current default only on a paired difference of more than 2 s.e.

Rows are dicts with ``cell``, ``variant`` (the `Variant` options as a dict, with ``curvature``) and
``lds_per_query`` (the per-query Spearman LDS; NaN where undefined). The candidate is the EK-FAC combination with
the highest grid mean (the curvature is not an option the rule chooses: EK-FAC is the library's default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from eval.grid.variants import COST_ORDER, DEFAULTS, OPTIONS

Row = Mapping[str, Any]
MARGIN = 2.0
"""A value departs from the default only if its paired difference exceeds this many standard errors."""


@dataclass(frozen=True)
class Paired:
    """Mean over cells of the per-cell mean paired difference (``a − b``, per query) and its s.e.
    ``sqrt(Σ_cells s.e.²) / n_cells``; ``per_cell`` holds each cell's (mean, s.e., n queries)."""

    mean: float
    stderr: float
    per_cell: dict[str, tuple[float, float, int]]

    @property
    def significant(self) -> bool:
        """``a`` beats ``b`` by more than `MARGIN` standard errors."""
        return self.mean > MARGIN * self.stderr


def _key(options: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(options.items()))


def index(rows: Sequence[Row]) -> dict[tuple[tuple[str, str], ...], dict[str, torch.Tensor]]:
    """``{variant key: {cell: per-query LDS [n_query] float64}}`` (rows with an error are left out)."""
    table: dict[tuple[tuple[str, str], ...], dict[str, torch.Tensor]] = {}
    for row in rows:
        if "lds_per_query" in row:
            values = torch.tensor([math.nan if v is None else v for v in row["lds_per_query"]], dtype=torch.float64)
            table.setdefault(_key(row["variant"]), {})[row["cell"]] = values
    return table


def grid_mean(per_cell: Mapping[str, torch.Tensor]) -> float:
    """Mean over cells of the per-query mean LDS (queries with an undefined LDS left out)."""
    return sum(float(v.nanmean()) for v in per_cell.values()) / len(per_cell)


def paired(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> Paired:
    """The paired difference ``a − b`` over the queries defined in both, per cell, then over cells."""
    per_cell: dict[str, tuple[float, float, int]] = {}
    for cell in sorted(set(a) & set(b)):
        d = a[cell] - b[cell]
        d = d[~d.isnan()]
        se = float(d.std() / math.sqrt(len(d))) if len(d) > 1 else math.nan
        per_cell[cell] = (float(d.mean()) if len(d) else math.nan, se, len(d))
    n = len(per_cell)
    mean = sum(m for m, _, _ in per_cell.values()) / n
    stderr = math.sqrt(sum(s * s for _, s, _ in per_cell.values())) / n
    return Paired(mean, stderr, per_cell)


@dataclass(frozen=True)
class Choice:
    """What the rule chose for one option: ``value``, the ``candidate``'s value, and each value's paired
    difference against the default at the candidate's other options."""

    option: str
    value: str
    default: str
    candidate: str
    against_default: dict[str, Paired]
    beats_default: tuple[str, ...]


def apply_rule(rows: Sequence[Row], cells: Sequence[str]) -> tuple[dict[str, str], dict[str, float], list[Choice]]:
    """Return (the candidate's options, every complete EK-FAC variant's grid mean by name, one `Choice` per option).

    Only variants with a result in every one of ``cells`` compete. For an option, each value v is compared with the
    current default at the candidate's other options; the values whose paired difference exceeds `MARGIN` s.e. beat
    the default. None: the default stays. Otherwise the one with the highest grid mean wins, unless another value
    that also beats the default is within `MARGIN` s.e. of it (paired): then the first of those in `COST_ORDER`.
    """
    table = {key: by_cell for key, by_cell in index(rows).items()
             if dict(key).get("curvature") == "ekfac" and set(cells) <= set(by_cell)}
    if not table:
        raise ValueError("no EK-FAC variant has results in every cell")
    means = {key: grid_mean(by_cell) for key, by_cell in table.items()}
    best = max(means, key=lambda key: means[key])
    candidate = {k: v for k, v in dict(best).items() if k != "curvature"}
    choices = []
    for option, values in OPTIONS.items():
        at = {value: _key({**dict(best), option: value}) for value in values}
        default = table[at[DEFAULTS[option]]]
        against = {value: paired(table[key], default) for value, key in at.items()
                   if key in table and value != DEFAULTS[option]}
        winners = [value for value, p in against.items() if p.significant]
        value = DEFAULTS[option]
        if winners:
            top = max(winners, key=lambda v: means[at[v]])
            tied = [v for v in winners if v == top or not paired(table[at[top]], table[at[v]]).significant]
            value = min(tied, key=COST_ORDER[option].index)
        choices.append(Choice(option, value, DEFAULTS[option], candidate[option], against, tuple(winners)))
    return candidate, {";".join(f"{k}={v}" for k, v in key): m for key, m in means.items()}, choices
