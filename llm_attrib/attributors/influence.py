"""Influence functions (Koh & Liang 2017; Grosse et al. 2023) with identity/diagonal/K-FAC/EK-FAC curvature.

``score[q, z] = ∇f(q)ᵀ (N·(F̄ + λI))⁻¹ ∇log p(z)`` where ``f(q) = log Pr(completion | prompt)``, ``log p(z)`` is
minus the training loss of example ``z`` and ``N`` the training-set size. **Positive = the training example
raises the query's log-probability**: to first order, removing ``z`` and retraining lowers ``f(q)`` by
``score[q, z]`` (the Fisher standing in for the Hessian). With identity curvature the score is the plain
gradient inner product ("grad-dot"), and ``normalize="cosine"`` divides by both gradients' norms ("grad-cos").
``normalize="relative"`` (RelatIF, Barshan et al. 2020) divides each training example's score by
``sqrt(∇log p(z)ᵀ (N·(F̄ + λI))⁻¹ ∇log p(z))``, so examples with large, atypical gradients do not dominate every
query's ranking; signs are unchanged.

The training set is streamed in batches: preconditioned query gradients are computed once, then each
training batch contributes ``Σ_t g_tᵀ Q a_t`` per layer (`llm_attrib.contraction`), never holding all
training gradients.
"""

from __future__ import annotations

import random
from collections.abc import Sequence as SequenceABC
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from llm_attrib.adapters.base import Adapter
from llm_attrib.attributors.chunks import ChunkScores, ChunkStore, ScoreColumns
from llm_attrib.capture import LayerCapture, TrackedLayer, per_example_gradients
from llm_attrib.contraction import QueryMatrices, query_matrices, squared_norms
from llm_attrib.curvature.base import DEFAULT_DAMPING, working_precision
from llm_attrib.curvature import Curvature, Grads, make_curvature
from llm_attrib.distributed import barrier, broadcast_from_main, gather_columns, is_main_process, shard_batches
from llm_attrib.errors import UserInputError
from llm_attrib.scores import Scores
from llm_attrib.store import data_fingerprint, load_tensors, save_tensors

NORMALIZATIONS = (None, "cosine", "relative")


def sample_indices(n: int, max_examples: int | None, seed: int) -> list[int]:
    """A seeded random sample of ``min(n, max_examples)`` indices, sorted (all of them if no limit)."""
    if max_examples is None or max_examples >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), max_examples))


def _take(records: Sequence[Any], indices: Sequence[int]) -> list[Any]:
    return [records[i] for i in indices]


class InfluenceAttributor:
    """Influence scores of training examples on queries; see the module docstring for sign and units.

    Args:
        adapter: what is differentiated (`CausalLMAdapter`, `ClassifierAdapter`).
        curvature: "ekfac" (default), "kfac", "diagonal", "identity", "explicit", or a `Curvature`.
        damping: absolute λ added to the per-example Fisher's eigenvalues, or "heuristic" (0.1 × mean eigenvalue).
        normalize: None, "cosine" (divide by the norms of the query and training gradients), or "relative"
            (divide by the square root of the training example's self-influence; RelatIF).
        max_examples: fit the curvature on a seeded random sample of at most this many training examples.
        batch_size: examples per forward/backward pass.
        seed: seeds the curvature sample and the sampled Fisher targets.
        fisher: "sampled" (true Fisher, targets from the model) or "empirical" (the data's targets).
        cache_dir: save fitted factors there and reload them on a later run with the same model, data and
            arguments; a cache made for something else is refused.
        progress: show progress bars.
        query_rank: None (full rank) or r: score with the best rank-r approximation ``U Vᵀ`` of each layer's
            preconditioned query matrix (SVD), ``n·B·T·r·(O+I)`` work per training batch ("query batching").
        rescore_top: with ``query_rank``, re-score each query's top-``rescore_top`` training records at full rank.
        dtype: dtype of the query/training gradient contractions (e.g. ``torch.bfloat16`` on a GPU for speed); None
            = float32 (float64 for a float64 model): a bf16/fp16 model's query gradients are summed over tokens
            and contracted in float32. Curvature statistics are accumulated in float64 (each batch's products in float32),
            eigendecompositions run in float64, scores are returned in float64.
        layer_partitions: fit and score the tracked layers in this many contiguous groups, one after another (one
            pass over the training data per group and stage), so only one group's statistics, query matrices and
            activations are held. With a ``cache_dir`` each group's factors are written to their own file and
            loaded only while that group is used, so the factors of all layers are never in memory at once.
    """

    def __init__(
        self,
        adapter: Adapter,
        curvature: str | Curvature = "ekfac",
        *,
        damping: float | str = DEFAULT_DAMPING,
        normalize: str | None = None,
        max_examples: int | None = None,
        batch_size: int = 8,
        seed: int = 0,
        fisher: str = "sampled",
        cache_dir: str | Path | None = None,
        progress: bool = False,
        query_rank: int | None = None,
        rescore_top: int | None = None,
        dtype: torch.dtype | None = None,
        layer_partitions: int = 1,
    ):
        if normalize not in NORMALIZATIONS:
            raise UserInputError(f"normalize must be one of {NORMALIZATIONS}, not {normalize!r}")
        if query_rank is not None and query_rank < 1:
            raise UserInputError(f"query_rank must be a positive integer or None, not {query_rank!r}")
        if rescore_top is not None and (query_rank is None or rescore_top < 1):
            raise UserInputError(f"rescore_top re-scores the top records of low-rank scores: give a positive "
                                 f"rescore_top together with query_rank (got rescore_top={rescore_top!r}, "
                                 f"query_rank={query_rank!r})")
        if not 1 <= layer_partitions <= len(adapter.layers):
            raise UserInputError(f"layer_partitions must be between 1 and {len(adapter.layers)} (the tracked layers), "
                                 f"not {layer_partitions}")
        self.adapter = adapter
        self.curvature = curvature if isinstance(curvature, Curvature) else make_curvature(curvature, damping=damping)
        if layer_partitions > 1 and not self.curvature.layerwise:
            raise UserInputError(f"{self.curvature.kind} curvature couples all tracked layers; use layer_partitions=1")
        self.normalize = normalize
        self.max_examples = max_examples
        self.batch_size = batch_size
        self.seed = seed
        self.fisher = fisher
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.progress = progress
        self.query_rank = query_rank
        self.rescore_top = rescore_top
        self.dtype = dtype
        self.layer_partitions = layer_partitions
        self._factor_files: dict[int, Path] = {}
        self._fitted_factors: str | None = None  # fingerprint of the factors fitted or loaded by `fit`

    @property
    def name(self) -> str:
        return f"influence-{self.curvature.kind}" + (f"-{self.normalize}" if self.normalize else "")

    # ----------------------------------------------------------------------------------------- fitting
    def fit(self, train: Sequence[Any]) -> "InfluenceAttributor":
        """Fit the curvature on a seeded sample of ``train`` (or load it from ``cache_dir``), one layer group at a time.

        With several layer partitions and a ``cache_dir``, each group's factors go to their own file and are
        released from memory once written (see `_factors_of`).
        """
        if len(train) == 0:
            raise UserInputError("the training set is empty")
        indices = sample_indices(len(train), self.max_examples, self.seed)
        examples = self.adapter.encode(_take(train, indices))
        expect = {
            "kind": self.curvature.kind,
            "model": self.adapter.fingerprint(),
            "data": data_fingerprint([getattr(e, "input_ids", None) or repr(e) for e in examples]),
            "n_train": len(train),
            "max_examples": self.max_examples,
            "seed": self.seed,
            "fisher": self.fisher,
        }
        self._factor_files = {}
        summaries: list[str] = []
        for part, layers in enumerate(self.partitions()):
            path = self._factor_path(part)
            if path is not None and broadcast_from_main(path.exists()):  # every rank takes rank 0's branch
                tensors, metadata = load_tensors(path, expect=expect)  # its layers: the fingerprint's and file name's
                self.curvature.load_state({**self.curvature.state, **tensors}, metadata).to(self.adapter.device)
            else:
                self.curvature.fit(self.adapter, examples, n_train=len(train), batch_size=self.batch_size,
                                   seed=self.seed, fisher=self.fisher, progress=self.progress, layers=layers)
                if path is not None:
                    if is_main_process():
                        save_tensors(path, self.curvature.layer_state(layers), {
                            **expect, **self.curvature.metadata(), "layers": [layer.name for layer in layers]})
                    barrier()  # the file exists before any rank reloads this group from it
            summaries += _summaries(self.curvature.layer_state(layers))
            if path is not None and self.layer_partitions > 1:
                self._factor_files[part] = path
                self._release(layers)
        self._fitted_factors = data_fingerprint(sorted(summaries))
        return self

    def _factor_path(self, part: int) -> Path | None:
        """Where layer group ``part``'s factors are cached (one file for all layers when there is one group)."""
        if self.cache_dir is None:
            return None
        if self.layer_partitions == 1:
            return self.cache_dir / f"{self.curvature.kind}-factors.safetensors"
        return self.cache_dir / f"{self.curvature.kind}-factors-part{part + 1:02d}of{self.layer_partitions:02d}.safetensors"

    def _release(self, layers: Sequence[TrackedLayer]) -> None:
        for key in self.curvature.layer_state(layers):
            del self.curvature.state[key]

    @contextmanager
    def _factors_of(self, layers: Sequence[TrackedLayer]) -> Iterator[None]:
        """Hold the factors of ``layers`` in memory for the block: those of a layer group written to its own file by
        `fit` are loaded for the block and released after it; factors fitted in memory stay where they are."""
        names = {layer.name for layer in layers}
        parts = [part for part, group in enumerate(self.partitions())
                 if part in self._factor_files and names & {layer.name for layer in group}]
        for part in parts:
            tensors, _ = load_tensors(self._factor_files[part])
            self.curvature.state.update({k: v.to(self.adapter.device) for k, v in tensors.items()})
        try:
            yield
        finally:
            for part in parts:
                self._release(self.partitions()[part])

    # ------------------------------------------------------------------------------------- gradients
    def _gradients(self, records: Sequence[Any], *, measure: bool, first_index: int = 0,
                   layers: Sequence[TrackedLayer] | None = None) -> Grads:
        """Per-example gradients ``{layer: [n, O, I]}`` of the measurement (queries) or log-likelihood (train)."""
        layers = list(self.adapter.layers if layers is None else layers)
        parts: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}
        examples = self.adapter.encode(records, first_index=first_index)
        for batch in self.adapter.batches(examples, self.batch_size):
            with LayerCapture(layers) as capture:
                objective = self.adapter.measure(batch) if measure else self.adapter.log_prob(batch)
                for layer, a, g in capture.output_gradients(objective.sum()):
                    parts[layer.name].append(per_example_gradients(working_precision(a), working_precision(g)))
        return {name: torch.cat(chunks) for name, chunks in parts.items()}

    def query_gradients(self, queries: Sequence[Any], layers: Sequence[TrackedLayer] | None = None) -> Grads:
        """Gradients of the measurement ``f(q)`` per query, ``{layer: [n_query, O, I]}``."""
        return self._gradients(queries, measure=True, layers=layers)

    def preconditioned_query_gradients(self, queries: Sequence[Any],
                                       layers: Sequence[TrackedLayer] | None = None) -> Grads:
        """``(N·(F̄ + λI))⁻¹ ∇f(q)`` per query (``{layer: [n_query, O, I]}``); cosine-normalised if asked.

        With ``layers`` (a subset) only those layers are computed, and the cosine norm is that subset's.
        """
        self._check_fitted()
        grads = self.query_gradients(queries, layers)
        with self._factors_of(list(self.adapter.layers if layers is None else layers)):
            preconditioned = self.curvature.precondition(grads)
        if self.normalize == "cosine":
            norms = _squared_norms(grads).sqrt().clamp(min=1e-30)
            preconditioned = {name: p / norms[:, None, None] for name, p in preconditioned.items()}
        return preconditioned

    def _check_fitted(self) -> None:
        if not self.curvature.is_fitted:
            raise UserInputError("call fit(train) before scoring")

    def partitions(self) -> list[list[TrackedLayer]]:
        """The tracked layers in ``layer_partitions`` contiguous groups, scored one group at a time."""
        layers = list(self.adapter.layers)
        k = self.layer_partitions
        return [layers[(len(layers) * i) // k:(len(layers) * (i + 1)) // k] for i in range(k)]

    # --------------------------------------------------------------------------------------- scoring
    def score(
        self,
        queries: Sequence[Any],
        train: Iterable[Any],
        *,
        per_module: bool = False,
        per_token: bool = False,
        output_dir: str | Path | None = None,
    ) -> Scores:
        """Scores ``[n_query, n_train]`` (positive = raises the query's log-probability).

        ``train`` is a sequence (a list, a ``datasets.Dataset``) or any iterable of records (a
        ``datasets.IterableDataset``, a generator), read once per layer partition, one batch at a time.
        ``per_module`` adds each layer's share; ``per_token`` adds, for every query and training document, the
        contribution of each of its token positions (``g_tᵀ Q a_t`` summed over layers; sums to the score).
        ``output_dir``: each finished chunk (one batch of training records, one layer partition) is written
        there atomically with its fingerprints, and a re-run skips the chunks already there (see `ChunkStore`).
        With ``query_rank`` set, the query matrices are rank-``r`` and ``rescore_top`` re-scores each query's best
        candidates at full rank. Under several processes each scores its contiguous shard of ``train`` and the
        columns are gathered in order.
        """
        if len(queries) == 0:
            raise UserInputError("no queries to score")
        self._check_fitted()
        if self.layer_partitions > 1 and iter(train) is train:
            raise UserInputError("the training data is read once per layer partition: pass a list, a Dataset or a "
                                 "re-iterable IterableDataset, not a one-shot iterator")
        if per_token and output_dir is not None:
            raise UserInputError("per_token parts are not stored in output_dir; score per_token without it")
        result = self._score_pass(queries, train, rank=self.query_rank, per_module=per_module,
                                  per_token=per_token, output_dir=output_dir)
        if self.query_rank is not None and self.rescore_top:
            if not isinstance(train, SequenceABC):
                raise UserInputError("rescore_top needs random access to the training records (a list or Dataset)")
            top = torch.topk(result.values, min(self.rescore_top, result.values.shape[1]), dim=1).indices
            union = sorted(set(top.flatten().tolist()))
            exact = self._score_pass(queries, [train[i] for i in union], rank=None, per_module=per_module,
                                     per_token=per_token, output_dir=None)
            result.replace_columns(union, exact)
        return result.to_scores(queries, method=self.name, units=self.units, metadata={
            "damping": self.curvature.damping, "n_train": self.curvature.n_train, "query_rank": self.query_rank})

    def _score_pass(self, queries: Sequence[Any], train: Iterable[Any], *, rank: int | None, per_module: bool,
                    per_token: bool, output_dir: str | Path | None) -> ScoreColumns:
        """Stream this process's shard of ``train`` once per layer partition; gather the columns across processes."""
        store = ChunkStore(output_dir, self._chunk_metadata(queries, rank)) if output_dir is not None else None
        columns = ScoreColumns(len(queries), per_module, per_token, [layer.name for layer in self.adapter.layers])
        query_sq_norm = torch.zeros(len(queries), dtype=torch.float64)
        for part, layers in enumerate(self.partitions()):
            grads = self.query_gradients(queries, layers)
            query_sq_norm += _squared_norms(grads).cpu()
            with self._factors_of(layers):  # one group's factors, for its queries and (RelatIF) its records
                contractions = {name: query_matrices(p, rank, self.dtype)
                                for name, p in self.curvature.precondition(grads).items()}
                del grads
                chunks = shard_batches(train, self.batch_size)
                for start, records in tqdm(chunks, desc=f"{self.name} scores {part + 1}/{len(self.partitions())}",
                                           disable=not self.progress):
                    chunk = store.load(part, start, records) if store is not None else None
                    if chunk is None:
                        chunk = self._score_chunk(start, records, layers, contractions, per_token)
                        if store is not None:
                            store.save(part, start, records, chunk)
                    columns.add(start, records, chunk)
        return columns.finish(query_sq_norm.sqrt(), self.normalize)

    def _score_chunk(self, start: int, records: Sequence[Any], layers: Sequence[TrackedLayer],
                     contractions: Mapping[str, QueryMatrices], per_token: bool) -> ChunkScores:
        """One training batch against ``layers``: per-layer ``[n_query, B]`` blocks, ``‖G_b‖²`` and token parts."""
        batch = self.adapter.collate(self.adapter.encode(records, first_index=start))
        blocks: dict[str, torch.Tensor] = {}
        tokens: torch.Tensor | None = None
        squared_norm = torch.zeros(len(batch), dtype=torch.float64, device=self.adapter.device)
        record_grads: Grads = {}
        with LayerCapture(layers) as capture:
            objective = self.adapter.log_prob(batch)
            for layer, a, g in capture.output_gradients(objective.sum()):
                contraction = contractions[layer.name]
                if per_token:
                    layer_tokens = contraction.token_scores(a, g)
                    tokens = layer_tokens if tokens is None else tokens + layer_tokens
                    blocks[layer.name] = layer_tokens.sum(dim=-1)
                else:
                    blocks[layer.name] = contraction.scores(a, g)
                if self.normalize == "cosine":
                    squared_norm += squared_norms(a.double(), g.double())
                elif self.normalize == "relative":
                    record_grads[layer.name] = per_example_gradients(a.double(), g.double())
        if record_grads:
            preconditioned = self.curvature.precondition(record_grads)
            squared_norm += sum((record_grads[k] * preconditioned[k]).flatten(1).sum(dim=1) for k in record_grads)
        token_parts = None
        if tokens is not None:
            mask = self.adapter.token_mask(batch)
            token_parts = [[tokens[q, b][mask[b]].cpu() for b in range(len(records))] for q in range(tokens.shape[0])]
        return ChunkScores({k: v.cpu() for k, v in blocks.items()}, squared_norm.cpu(), token_parts)

    def _chunk_metadata(self, queries: Sequence[Any], rank: int | None) -> dict[str, Any]:
        """What a stored chunk of scores depends on besides its own training records."""
        return {
            "kind": "influence-scores",
            "method": self.name,
            "model": self.adapter.fingerprint(),
            "queries": data_fingerprint([repr(q) for q in queries]),
            "damping": self.curvature.damping,
            "n_train": self.curvature.n_train,
            "factors": self._fitted_factors or data_fingerprint(sorted(_summaries(self.curvature.state))),
            "query_rank": rank,
            "dtype": str(self.dtype),
            "batch_size": self.batch_size,
            "layer_partitions": [[layer.name for layer in part] for part in self.partitions()],
        }

    def self_influence(self, train: Sequence[Any]) -> torch.Tensor:
        """``[n_train]``: ``∇log p(z)ᵀ (N·(F̄ + λI))⁻¹ ∇log p(z)`` — large for atypical or mislabelled examples.

        Under several processes each computes its contiguous shard and the values are gathered in order.
        """
        if not self.curvature.is_fitted:
            raise UserInputError("call fit(train) before self_influence")
        values: dict[int, torch.Tensor] = {}  # global index of a batch's first record -> its values
        for layers in self.partitions():
            with self._factors_of(layers):
                for start, records in shard_batches(train, self.batch_size):
                    grads = self._gradients(records, measure=False, first_index=start, layers=layers)
                    preconditioned = self.curvature.precondition(grads)
                    value = sum((grads[k].double() * preconditioned[k].double()).flatten(1).sum(dim=1)
                                for k in grads).cpu()
                    values[start] = values[start] + value if start in values else value
        local = [values[start] for start in sorted(values)]
        return gather_columns(torch.cat([torch.zeros(0, dtype=torch.float64)] + local)[None, :])[0]

    @property
    def units(self) -> str:
        if self.normalize == "cosine":
            return "cosine similarity of gradients (positive = raises the query's log-probability)"
        if self.normalize == "relative":
            return "influence / sqrt(self-influence of the example) (RelatIF; positive = raises the query's log-probability)"
        if self.curvature.kind == "identity":
            return "gradient inner product (positive = raises the query's log-probability)"
        return "predicted drop of the query's log-probability if the example were removed (first order)"


def _summaries(state: Mapping[str, torch.Tensor]) -> list[str]:
    """``"key:sum"`` per factor tensor, for a fingerprint of fitted factors."""
    return [f"{key}:{float(value.double().sum())}" for key, value in state.items()]


def _squared_norms(grads: Grads) -> torch.Tensor:
    """``[n]``: the squared Frobenius norm of each example's gradient over the layers in ``grads``."""
    return sum(g.double().flatten(1).square().sum(dim=1) for g in grads.values())
