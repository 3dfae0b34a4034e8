"""`EstimatorsConfig`: which cells and candidates ``python -m eval.estimators`` runs, and where it writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eval.grid.config import DATASETS
from llm_attrib.config import Config, ConfigError, at_least, option


@dataclass(frozen=True)
class EstimatorsConfig(Config):
    """Options of the estimator comparison (the grid's own sizes are `eval.grid.config.GridConfig`'s defaults)."""

    data_dir: Path = option(Path("../shared/data"), "folder with the grid's data files")
    grid_cache_dir: Path = option(Path("eval/_runs/grid"), "the grid's ground-truth caches (read, never built)")
    cache_dir: Path = option(Path("eval/_runs/estimators"), "per-cell, per-candidate results (resumable)")
    out_dir: Path = option(Path("eval/estimators"), "where README.md and results.json are written")
    datasets: tuple[str, ...] = option(DATASETS, "comma-separated data sets")
    depths: tuple[int, ...] = option((2, 4), "comma-separated model depths")
    candidates: tuple[str, ...] = option((), "comma-separated candidates (none = all)")
    threads: int = option(1, "torch intra-op threads", check=at_least(1))
    report_only: bool = option(False, "only rebuild README.md and results.json from the cached results")

    def validate(self) -> None:
        from eval.estimators.candidates import CANDIDATES

        unknown = sorted(set(self.candidates) - set(CANDIDATES))
        if unknown:
            raise ConfigError("candidates", f"must be among {', '.join(CANDIDATES)}, not {unknown[0]!r}")
