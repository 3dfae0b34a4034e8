"""`InfluenceAttributor`: the API of influence functions — fit the factors, score queries, self-influence, save.

The math, sign and units are in `llm_attrib.attributors.influence`; the factor lifecycle in `.factors`, the
per-batch scoring in `.engine`.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from llm_attrib.adapters.base import Adapter
from llm_attrib.attributors.base import Attributor, make_config
from llm_attrib.attributors.chunks import ChunkScores, ChunkStore, ScoreColumns
from llm_attrib.attributors.influence.config import DTYPES, InfluenceConfig
from llm_attrib.attributors.influence.engine import gradient_squared_norms, layer_gradients, score_chunk
from llm_attrib.attributors.influence.factors import Factors
from llm_attrib.attributors.influence.refine import FisherOperator, refine
from llm_attrib.capture import TrackedLayer
from llm_attrib.config import ConfigError
from llm_attrib.contraction import QueryMatrices, query_matrices
from llm_attrib.curvature import Curvature, Grads, make_curvature
from llm_attrib.distributed import gather_columns, shard_batches, shard_bounds
from llm_attrib.errors import UserInputError
from llm_attrib.progress import progress as tracked
from llm_attrib.scores import Scores
from llm_attrib.store import data_fingerprint, tensors_fingerprint


class InfluenceAttributor(Attributor):
    """Influence scores of training examples on queries; `llm_attrib.attributors.influence` states sign and units.

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
        self.factors = Factors(adapter, self.curvature, self.config, self.cache_dir, progress)

    @property
    def name(self) -> str:
        refined = f"-cg{self.config.refine_steps}" if self.config.refine_steps else ""
        return f"influence-{self.curvature.kind}{refined}" + (f"-{self.config.normalize}" if self.config.normalize else "")

    @property
    def is_fitted(self) -> bool:
        return self.curvature.is_fitted

    # ------------------------------------------------------------------------------------- persistence
    def _bound_to(self) -> dict[str, Any]:
        return {"model": self.adapter.fingerprint(), "layers": [layer.name for layer in self.adapter.layers]}

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return self.factors.state()

    def _load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        self.factors.load_state(tensors, metadata)

    # ----------------------------------------------------------------------------------------- fitting
    def fit(self, train: Sequence[Any]) -> "InfluenceAttributor":
        """Fit the curvature on a seeded sample of ``train`` (or load it from ``cache_dir``), one layer group at a
        time (`Factors.fit`)."""
        self.factors.fit(train)
        return self

    def partitions(self) -> list[list[TrackedLayer]]:
        """The tracked layers in ``layer_partitions`` contiguous groups, scored one group at a time."""
        return self.factors.partitions()

    def gradients(self, records: Sequence[Any], *, measure: bool,
                  layers: Sequence[TrackedLayer] | None = None) -> Grads:
        """Per-example gradients ``{layer: [n, O, I]}`` of the measurement (``measure``: queries) or of the
        log-likelihood (training records) of ``records``, over ``layers`` (default: every tracked layer)."""
        return layer_gradients(self.adapter, records, list(self.adapter.layers if layers is None else layers),
                               measure=measure, batch_size=self.config.batch_size)

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
        n_batches = None  # this process's training batches per pass, where ``train`` has a length
        if hasattr(train, "__len__"):
            first, stop = shard_bounds(len(train))
            n_batches = -(-(stop - first) // self.config.batch_size)
        for part, layers in enumerate(self.partitions()):
            grads = self.gradients(queries, measure=True, layers=layers)
            query_sq_norm += gradient_squared_norms(grads).cpu()
            with self.factors.hold(layers):  # one group's factors, for its queries and (RelatIF) its records
                contractions = {name: query_matrices(p, rank, self.config.torch_dtype)
                                for name, p in self._precondition(grads, layers).items()}
                del grads
                chunks = shard_batches(train, self.config.batch_size)
                for start, records in tracked(chunks, f"{self.name} scores {part + 1}/{len(self.partitions())}",
                                              total=n_batches, enabled=self.progress):
                    chunk = store.load(part, start, records) if store is not None else None
                    if chunk is None:
                        chunk = self._score_chunk(start, records, layers, contractions, per_token)
                        if store is not None:
                            store.save(part, start, records, chunk)
                    columns.add(start, records, chunk)
        return columns.finish(query_sq_norm.sqrt(), self.config.normalize)

    def _precondition(self, grads: Grads, layers: Sequence[TrackedLayer]) -> Grads:
        """The query gradients' solve: the curvature's, or refined by ``refine_steps`` CG steps (`.refine`)."""
        if not self.config.refine_steps:
            return self.curvature.precondition(grads)
        operator = FisherOperator(self.adapter, self.curvature, self.factors.examples, layers=layers,
                                  batch_size=self.config.batch_size, seed=self.config.seed, fisher=self.config.fisher)
        return refine(self.curvature, operator, grads, self.config.refine_steps)

    def _score_chunk(self, start: int, records: Sequence[Any], layers: Sequence[TrackedLayer],
                     contractions: Mapping[str, QueryMatrices], per_token: bool) -> ChunkScores:
        """One training batch against ``layers`` (`engine.score_chunk`)."""
        return score_chunk(self.adapter, self.curvature, start, records, layers, contractions, per_token=per_token,
                           normalize=self.config.normalize)

    def _chunk_metadata(self, queries: Sequence[Any], rank: int | None) -> dict[str, Any]:
        """What a stored chunk of scores depends on besides its own training records."""
        return {
            "kind": "influence-scores",
            "method": self.name,
            "model": self.adapter.fingerprint(),
            "queries": data_fingerprint(self.adapter.encode(queries)),  # token ids and labels
            "damping": self.curvature.damping,
            "n_train": self.curvature.n_train,
            "factors": self.factors.fingerprint or tensors_fingerprint(self.curvature.state),
            "query_rank": rank,
            "dtype": str(self.config.torch_dtype),
            "batch_size": self.config.batch_size,
            "layer_partitions": [[layer.name for layer in part] for part in self.partitions()],
            **({"refine_steps": self.config.refine_steps, "fisher": self.config.fisher, "seed": self.config.seed}
               if self.config.refine_steps else {}),
        }

    def self_influence(self, train: Sequence[Any]) -> torch.Tensor:
        """``[n_train]``: ``∇log p(z)ᵀ (N·(F̄ + λI))⁻¹ ∇log p(z)`` — large for atypical or mislabelled examples.

        Under several processes each computes its contiguous shard and the values are gathered in order.
        """
        self._check_fitted()
        values: dict[int, torch.Tensor] = {}  # global index of a batch's first record -> its values
        for layers in self.partitions():
            with self.factors.hold(layers):
                for start, records in shard_batches(train, self.config.batch_size):
                    grads = layer_gradients(self.adapter, records, layers, measure=False,
                                            batch_size=self.config.batch_size, first_index=start)
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
