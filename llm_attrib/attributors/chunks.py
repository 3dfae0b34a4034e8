"""Partial influence scores: one training chunk's columns, their resumable store, their assembly.

A *chunk* is one batch of training records scored against one group of layers (a layer partition). Its
columns are the per-layer blocks ``{layer: [n_query, B]}`` (float64, positive = the record raises the
query's log-probability, before any cosine normalisation), the records' squared gradient norms ``[B]`` (for
cosine normalisation) and optionally per-token parts. `ChunkStore` writes each finished chunk atomically with
its fingerprints, so an interrupted run resumes where it stopped; `ScoreColumns` sums chunks over layer
partitions, orders them, gathers them across processes and turns them into `Scores`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from llm_attrib.data import record_ids
from llm_attrib.distributed import gather_columns, gather_objects
from llm_attrib.scores import Scores
from llm_attrib.store import data_fingerprint, load_tensors, remove_stale_temps, save_tensors

SQUARED_NORM = "squared_norm"
MODULE_PREFIX = "module/"


@dataclass
class ChunkScores:
    """One chunk: per-layer ``{layer: [n_query, B]}``, ``squared_norm [B]``, ``tokens[q][b] -> [T_b]`` or None."""

    blocks: dict[str, torch.Tensor]
    squared_norm: torch.Tensor
    tokens: list[list[torch.Tensor]] | None = None


class ChunkStore:
    """Finished chunks on disk: ``part{p}-rows{start}-{stop}.safetensors`` under ``folder``.

    Each file's metadata holds ``metadata`` (model, queries, factors, damping, rank, dtype, batch size, layer
    partitions…) plus the fingerprint of its own training records (their exact contents); a file made for anything
    else, or whose bytes changed, is refused with `CacheMismatchError` rather than reused. Opening the store removes
    the temporary files that a killed run left in ``folder`` (a live process's are kept).
    """

    def __init__(self, folder: str | Path, metadata: Mapping[str, Any]):
        self.folder = Path(folder)
        self.metadata = dict(metadata)
        remove_stale_temps(self.folder)

    def _path(self, part: int, start: int, n: int) -> Path:
        return self.folder / f"part{part:02d}-rows{start:09d}-{start + n:09d}.safetensors"

    def _expect(self, records: Sequence[Any]) -> dict[str, Any]:
        return {**self.metadata, "data": data_fingerprint(list(records))}

    def load(self, part: int, start: int, records: Sequence[Any]) -> ChunkScores | None:
        """The stored chunk, or None if it was not finished."""
        path = self._path(part, start, len(records))
        if not path.exists():
            return None
        tensors, _ = load_tensors(path, expect=self._expect(records))
        blocks = {k[len(MODULE_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODULE_PREFIX)}
        return ChunkScores(blocks, tensors[SQUARED_NORM])

    def save(self, part: int, start: int, records: Sequence[Any], chunk: ChunkScores) -> None:
        tensors = {f"{MODULE_PREFIX}{k}": v for k, v in chunk.blocks.items()}
        save_tensors(self._path(part, start, len(records)), {**tensors, SQUARED_NORM: chunk.squared_norm},
                     self._expect(records))


class ScoreColumns:
    """Chunks summed over layer partitions, then ordered, gathered across processes and normalised."""

    def __init__(self, n_query: int, per_module: bool, per_token: bool, layer_names: Sequence[str]):
        self.n_query, self.per_module, self.per_token = n_query, per_module, per_token
        # every process gathers the same blocks in the same order, even one whose shard has no record
        self.block_names = sorted(layer_names) if per_module else [""]
        self._chunks: dict[int, ChunkScores] = {}
        self._ids: dict[int, list[Any]] = {}
        self.values = torch.zeros(n_query, 0, dtype=torch.float64)
        self.modules: dict[str, torch.Tensor] = {}
        self.tokens: list[list[torch.Tensor]] = [[] for _ in range(n_query)]
        self.ids: list[Any] = []

    def add(self, start: int, records: Sequence[Any], chunk: ChunkScores) -> None:
        """Add a chunk (of any layer partition) of the training records beginning at global index ``start``."""
        kept = ChunkScores(
            dict(chunk.blocks) if self.per_module else {"": sum(chunk.blocks.values())},
            chunk.squared_norm, chunk.tokens if self.per_token else None,
        )
        previous = self._chunks.get(start)
        if previous is None:
            self._chunks[start] = kept
            self._ids[start] = record_ids(records, start=start)
            return
        for name, block in kept.blocks.items():
            previous.blocks[name] = previous.blocks[name] + block if name in previous.blocks else block
        previous.squared_norm = previous.squared_norm + kept.squared_norm
        if kept.tokens is not None and previous.tokens is not None:
            previous.tokens = [[x + y for x, y in zip(p, k)] for p, k in zip(previous.tokens, kept.tokens)]

    def finish(self, query_norm: torch.Tensor, normalize: str | None) -> "ScoreColumns":
        """Concatenate this process's chunks in order, gather all processes' columns, normalise if asked.

        ``normalize="cosine"`` divides by the query norm and the record norm (``squared_norm`` holds ``‖G‖²``);
        ``"relative"`` divides by the record's curvature norm only (``squared_norm`` holds its self-influence).
        """
        starts = sorted(self._chunks)
        chunks = [self._chunks.pop(s) for s in starts]
        empty = torch.zeros(self.n_query, 0, dtype=torch.float64)
        modules = {name: gather_columns(torch.cat([empty] + [c.blocks[name] for c in chunks], dim=1))
                   for name in self.block_names}
        squared = gather_columns(torch.cat([torch.zeros(0, dtype=torch.float64)] +
                                           [c.squared_norm.double() for c in chunks])[None, :])[0]
        self.ids = gather_objects([i for s in starts for i in self._ids.pop(s)])
        self.values = sum(modules.values())
        if self.per_token:
            local = [[t for c in chunks for t in (c.tokens or [[]] * self.n_query)[q]] for q in range(self.n_query)]
            self.tokens = [gather_objects(row) for row in local]
        if normalize is not None:
            record_norm = squared.clamp(min=0).sqrt().clamp(min=1e-30)[None, :]
            scale = query_norm.clamp(min=1e-30)[:, None] * record_norm if normalize == "cosine" else record_norm
            self.values = self.values / scale
            modules = {k: v / scale for k, v in modules.items()}
            self.tokens = [[t / scale[q, n] for n, t in enumerate(row)] for q, row in enumerate(self.tokens)]
        self.modules = modules if self.per_module else {}
        return self

    def replace_columns(self, indices: Sequence[int], other: "ScoreColumns") -> None:
        """Overwrite the columns ``indices`` with ``other``'s columns (scored on exactly those records, in order)."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        self.values[:, index] = other.values
        for name, block in other.modules.items():
            self.modules[name][:, index] = block
        if self.per_token:
            for q, row in enumerate(other.tokens):
                for position, column in enumerate(indices):
                    self.tokens[q][column] = row[position]

    def to_scores(self, queries: Sequence[Any], **fields: Any) -> Scores:
        return Scores(values=self.values, query_ids=record_ids(queries), train_ids=list(self.ids),
                      per_module=dict(self.modules) if self.per_module else None,
                      per_token=self.tokens if self.per_token else None, **fields)
