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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from llm_attrib.adapters.base import Adapter
from llm_attrib.attributors.base import Attributor, make_config
from llm_attrib.attributors.chunks import ChunkScores, ChunkStore, ScoreColumns
from llm_attrib.capture import LayerCapture, TrackedLayer, per_example_gradients
from llm_attrib.contraction import QueryMatrices, query_matrices, squared_norms
from llm_attrib.config import Config, ConfigError, at_least, damping_check, option
from llm_attrib.curvature import CURVATURES, Curvature, Grads, make_curvature
from llm_attrib.curvature.base import DEFAULT_DAMPING, FISHER_TARGETS, working_precision
from llm_attrib.distributed import barrier, broadcast_from_main, gather_columns, is_main_process, shard_batches
from llm_attrib.errors import UserInputError
from llm_attrib.scores import Scores
from llm_attrib.store import data_fingerprint, load_tensors, save_tensors, tensors_fingerprint

NORMALIZATIONS = (None, "cosine", "relative")


def sample_indices(n: int, max_examples: int | None, seed: int) -> list[int]:
    """A seeded random sample of ``min(n, max_examples)`` indices, sorted (all of them if no limit)."""
    if max_examples is None or max_examples >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), max_examples))


def _take(records: Sequence[Any], indices: Sequence[int]) -> list[Any]:
    return [records[i] for i in indices]


DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}
"""Names of the contraction dtypes `InfluenceConfig.dtype` accepts."""


def _damping_or_default(value: Any) -> str | None:
    return None if value is None else damping_check(value)


@dataclass(frozen=True)
class InfluenceConfig(Config):
    """Options of `InfluenceAttributor` (see the module docstring for sign and units)."""

    curvature: str = option("ekfac", "curvature of the influence preconditioner", choices=tuple(CURVATURES))
    damping: float | str | None = option(
        None, "absolute damping added to the per-example Fisher's eigenvalues, or 'heuristic' (0.1 x each layer's "
              f"mean eigenvalue); none = {DEFAULT_DAMPING!r} (identity curvature applies none)",
        check=_damping_or_default)
    normalize: str | None = option(None, "none, cosine (divide by both gradients' norms) or relative (RelatIF: by "
                                         "the root of the training example's self-influence)", choices=NORMALIZATIONS)
    fisher: str = option("sampled", "curvature targets: sampled from the model (true Fisher) or the data's "
                                    "(empirical: the same factors for any number of processes)",
                         choices=FISHER_TARGETS)
    max_examples: int | None = option(None, "fit the curvature on a seeded random sample of at most this many "
                                            "training records (none = all)", check=at_least(1))
    batch_size: int = option(8, "examples per forward/backward pass", check=at_least(1))
    seed: int = option(0, "seeds the curvature sample and the sampled Fisher targets")
    query_rank: int | None = option(None, "score with rank-r query matrices (query batching; none = full rank)",
                                    check=at_least(1))
    rescore_top: int | None = option(None, "with query_rank, re-score each query's top records at full rank",
                                     check=at_least(1))
    layer_partitions: int = option(1, "fit and score the tracked layers in this many groups (less memory, more "
                                      "passes over the data)", check=at_least(1))
    dtype: str | None = option(None, "dtype of the gradient contractions (none = float32, float64 for a float64 "
                                     "model); bfloat16 on a GPU for speed", choices=(None, *DTYPES), flag=False)

    def validate(self) -> None:
        if self.rescore_top is not None and self.query_rank is None:
            raise ConfigError("rescore_top", "re-scores the top records of low-rank scores: give query_rank too")
        if self.curvature == "identity" and self.damping is not None:
            raise ConfigError("damping", f"cannot be applied by identity curvature (grad-dot): leave it unset, "
                                         f"not {self.damping!r}")

    @property
    def effective_damping(self) -> float | str | None:
        """The damping the curvature applies: the given one, `DEFAULT_DAMPING`, or None for identity."""
        if self.curvature == "identity":
            return None
        return DEFAULT_DAMPING if self.damping is None else self.damping

    @property
    def torch_dtype(self) -> torch.dtype | None:
        return None if self.dtype is None else DTYPES[self.dtype]


class InfluenceAttributor(Attributor):
    """Influence scores of training examples on queries; see the module docstring for sign and units.

    Args:
        adapter: what is differentiated (`CausalLMAdapter`, `ClassifierAdapter`).
        curvature: the curvature's name (shorthand for ``config.curvature``), or a `Curvature` object to use as is.
        config: an `InfluenceConfig`; keyword ``options`` are its fields (``damping=1e-8, batch_size=4``) and
            override those of ``config``. With ``layer_partitions > 1`` each group of layers is fitted and scored on
            its own (one pass over the training data per group and stage), so only one group's statistics, query
            matrices and activations are held; a bf16/fp16 model's query gradients are contracted in float32 unless
            ``dtype`` says otherwise, statistics accumulate in float64 and scores are float64.
        cache_dir: save fitted factors there and reload them on a later run with the same model, data and
            options; a cache made for something else is refused. With layer partitions each group's factors are
            written to their own file and loaded only while that group is used.
        progress: show progress.
    """

    kind = "influence"
    config_class = InfluenceConfig
    config: InfluenceConfig

    def __init__(self, adapter: Adapter, curvature: str | Curvature | None = None, *,
                 config: InfluenceConfig | None = None, cache_dir: str | Path | None = None, progress: bool = False,
                 **options: Any):
        if isinstance(curvature, Curvature):
            options["curvature"] = curvature.kind
        elif curvature is not None:
            options["curvature"] = curvature
        if isinstance(options.get("dtype"), torch.dtype):
            options["dtype"] = {value: name for name, value in DTYPES.items()}[options["dtype"]]
        self.config = make_config(InfluenceConfig, config, options)
        if self.config.layer_partitions > len(adapter.layers):
            raise ConfigError("layer_partitions", f"must be at most {len(adapter.layers)} (the tracked layers), "
                                                  f"not {self.config.layer_partitions}")
        self.adapter = adapter
        self.curvature = (curvature if isinstance(curvature, Curvature)
                          else make_curvature(self.config.curvature, damping=self.config.effective_damping))
        if self.config.layer_partitions > 1 and not self.curvature.layerwise:
            raise ConfigError("layer_partitions", f"must be 1: {self.curvature.kind} curvature couples all "
                                                  "tracked layers")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.progress = progress
        self._factor_files: dict[int, Path] = {}
        self._fitted_factors: str | None = None  # fingerprint of the factors fitted or loaded by `fit`

    @property
    def name(self) -> str:
        return f"influence-{self.curvature.kind}" + (f"-{self.config.normalize}" if self.config.normalize else "")

    @property
    def is_fitted(self) -> bool:
        return self.curvature.is_fitted

    # ------------------------------------------------------------------------------------- persistence
    def _bound_to(self) -> dict[str, Any]:
        return {"model": self.adapter.fingerprint(), "layers": [layer.name for layer in self.adapter.layers]}

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Every layer's factors (those a layer-partitioned fit wrote to files are read back) and their metadata."""
        with self._factors_of(self.adapter.layers):
            tensors = {key: value.cpu() for key, value in self.curvature.state.items()}
        return tensors, {"curvature": self.curvature.metadata(), "factors": self._fitted_factors}

    def _load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        self.curvature.load_state(tensors, metadata["curvature"]).to(self.adapter.device)
        self._factor_files = {}
        self._fitted_factors = metadata["factors"]

    # ----------------------------------------------------------------------------------------- fitting
    def fit(self, train: Sequence[Any]) -> "InfluenceAttributor":
        """Fit the curvature on a seeded sample of ``train`` (or load it from ``cache_dir``), one layer group at a time.

        With several layer partitions and a ``cache_dir``, each group's factors go to their own file and are
        released from memory once written (see `_factors_of`).
        """
        if len(train) == 0:
            raise UserInputError("the training set is empty")
        indices = sample_indices(len(train), self.config.max_examples, self.config.seed)
        examples = self.adapter.encode(_take(train, indices))
        expect = {
            "kind": self.curvature.kind,
            "model": self.adapter.fingerprint(),
            "data": data_fingerprint(examples),  # token ids and labels: which tokens are scored counts
            "n_train": len(train),
            "max_examples": self.config.max_examples,
            "seed": self.config.seed,
            "fisher": self.config.fisher,
        }
        self._factor_files = {}
        factors: list[str] = []  # each layer group's fingerprint (exact bytes)
        for part, layers in enumerate(self.partitions()):
            path = self._factor_path(part)
            if path is not None and broadcast_from_main(path.exists()):  # every rank takes rank 0's branch
                tensors, metadata = load_tensors(path, expect=expect)  # its layers: the fingerprint's and file name's
                self.curvature.load_state({**self.curvature.state, **tensors}, metadata).to(self.adapter.device)
            else:
                self.curvature.fit(self.adapter, examples, n_train=len(train), batch_size=self.config.batch_size,
                                   seed=self.config.seed, fisher=self.config.fisher, progress=self.progress,
                                   layers=layers)
                if path is not None:
                    if is_main_process():
                        save_tensors(path, self.curvature.layer_state(layers), {
                            **expect, **self.curvature.metadata(), "layers": [layer.name for layer in layers]})
                    barrier()  # the file exists before any rank reloads this group from it
            factors.append(tensors_fingerprint(self.curvature.layer_state(layers)))
            if path is not None and self.config.layer_partitions > 1:
                self._factor_files[part] = path
                self._release(layers)
        self._fitted_factors = factors[0] if len(factors) == 1 else data_fingerprint(factors)
        return self

    def _factor_path(self, part: int) -> Path | None:
        """Where layer group ``part``'s factors are cached (one file for all layers when there is one group)."""
        if self.cache_dir is None:
            return None
        if self.config.layer_partitions == 1:
            return self.cache_dir / f"{self.curvature.kind}-factors.safetensors"
        parts = self.config.layer_partitions
        return self.cache_dir / f"{self.curvature.kind}-factors-part{part + 1:02d}of{parts:02d}.safetensors"

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
        for batch in self.adapter.batches(examples, self.config.batch_size):
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
        if self.config.normalize == "cosine":
            norms = _squared_norms(grads).sqrt().clamp(min=1e-30)
            preconditioned = {name: p / norms[:, None, None] for name, p in preconditioned.items()}
        return preconditioned

    def partitions(self) -> list[list[TrackedLayer]]:
        """The tracked layers in ``layer_partitions`` contiguous groups, scored one group at a time."""
        layers = list(self.adapter.layers)
        k = self.config.layer_partitions
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
        if self.config.layer_partitions > 1 and iter(train) is train:
            raise UserInputError("the training data is read once per layer partition: pass a list, a Dataset or a "
                                 "re-iterable IterableDataset, not a one-shot iterator")
        if per_token and output_dir is not None:
            raise UserInputError("per_token parts are not stored in output_dir; score per_token without it")
        result = self._score_pass(queries, train, rank=self.config.query_rank, per_module=per_module,
                                  per_token=per_token, output_dir=output_dir)
        if self.config.query_rank is not None and self.config.rescore_top:
            if not isinstance(train, SequenceABC):
                raise UserInputError("rescore_top needs random access to the training records (a list or Dataset)")
            top = torch.topk(result.values, min(self.config.rescore_top, result.values.shape[1]), dim=1).indices
            union = sorted(set(top.flatten().tolist()))
            exact = self._score_pass(queries, [train[i] for i in union], rank=None, per_module=per_module,
                                     per_token=per_token, output_dir=None)
            result.replace_columns(union, exact)
        return result.to_scores(queries, method=self.name, units=self.units, metadata={
            "damping": self.curvature.damping, "n_train": self.curvature.n_train, "query_rank": self.config.query_rank})

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
                contractions = {name: query_matrices(p, rank, self.config.torch_dtype)
                                for name, p in self.curvature.precondition(grads).items()}
                del grads
                chunks = shard_batches(train, self.config.batch_size)
                for start, records in tqdm(chunks, desc=f"{self.name} scores {part + 1}/{len(self.partitions())}",
                                           disable=not self.progress):
                    chunk = store.load(part, start, records) if store is not None else None
                    if chunk is None:
                        chunk = self._score_chunk(start, records, layers, contractions, per_token)
                        if store is not None:
                            store.save(part, start, records, chunk)
                    columns.add(start, records, chunk)
        return columns.finish(query_sq_norm.sqrt(), self.config.normalize)

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
                if self.config.normalize == "cosine":
                    squared_norm += squared_norms(a.double(), g.double())
                elif self.config.normalize == "relative":
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
            "queries": data_fingerprint(self.adapter.encode(queries)),  # token ids and labels
            "damping": self.curvature.damping,
            "n_train": self.curvature.n_train,
            "factors": self._fitted_factors or tensors_fingerprint(self.curvature.state),
            "query_rank": rank,
            "dtype": str(self.config.torch_dtype),
            "batch_size": self.config.batch_size,
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
                for start, records in shard_batches(train, self.config.batch_size):
                    grads = self._gradients(records, measure=False, first_index=start, layers=layers)
                    preconditioned = self.curvature.precondition(grads)
                    value = sum((grads[k].double() * preconditioned[k].double()).flatten(1).sum(dim=1)
                                for k in grads).cpu()
                    values[start] = values[start] + value if start in values else value
        local = [values[start] for start in sorted(values)]
        return gather_columns(torch.cat([torch.zeros(0, dtype=torch.float64)] + local)[None, :])[0]

    @property
    def units(self) -> str:
        if self.config.normalize == "cosine":
            return "cosine similarity of gradients (positive = raises the query's log-probability)"
        if self.config.normalize == "relative":
            return "influence / sqrt(self-influence of the example) (RelatIF; positive = raises the query's log-probability)"
        if self.curvature.kind == "identity":
            return "gradient inner product (positive = raises the query's log-probability)"
        return "predicted drop of the query's log-probability if the example were removed (first order)"


def _squared_norms(grads: Grads) -> torch.Tensor:
    """``[n]``: the squared Frobenius norm of each example's gradient over the layers in ``grads``."""
    return sum(g.double().flatten(1).square().sum(dim=1) for g in grads.values())
