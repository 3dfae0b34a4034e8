"""Influence functions (Koh & Liang 2017; Grosse et al. 2023) with identity/diagonal/K-FAC/EK-FAC curvature.

``score[q, z] = ∇f(q)ᵀ (N·(F̄ + λI))⁻¹ ∇log p(z)`` where ``f(q) = log Pr(completion | prompt)``, ``log p(z)`` is
minus the training loss of example ``z`` and ``N`` the training-set size. **Positive = the training example
raises the query's log-probability**: to first order, removing ``z`` and retraining lowers ``f(q)`` by
``score[q, z]`` (the Fisher standing in for the Hessian). With identity curvature the score is the plain
gradient inner product ("grad-dot"), and ``normalize="cosine"`` divides by both gradients' norms ("grad-cos").

The training set is streamed in batches: preconditioned query gradients are computed once, then each
training batch contributes ``Σ_t g_tᵀ Q a_t`` per layer (`llm_attrib.contraction`), never holding all
training gradients.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from llm_attrib.adapters.base import Adapter
from llm_attrib.capture import LayerCapture, per_example_gradients
from llm_attrib.contraction import inner_products, per_token_inner_products, squared_norms
from llm_attrib.curvature import Curvature, Grads, make_curvature
from llm_attrib.data import batched, record_ids
from llm_attrib.errors import UserInputError
from llm_attrib.scores import Scores
from llm_attrib.store import data_fingerprint, load_tensors, save_tensors

DEFAULT_DAMPING: float | str = 1e-8
NORMALIZATIONS = (None, "cosine")


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
        normalize: None, or "cosine" (divide by the norms of the query and training gradients).
        max_examples: fit the curvature on a seeded random sample of at most this many training examples.
        batch_size: examples per forward/backward pass.
        seed: seeds the curvature sample and the sampled Fisher targets.
        fisher: "sampled" (true Fisher, targets from the model) or "empirical" (the data's targets).
        cache_dir: save fitted factors there and reload them on a later run with the same model, data and
            arguments; a cache made for something else is refused.
        progress: show progress bars.
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
    ):
        if normalize not in NORMALIZATIONS:
            raise UserInputError(f"normalize must be one of {NORMALIZATIONS}, not {normalize!r}")
        self.adapter = adapter
        self.curvature = curvature if isinstance(curvature, Curvature) else make_curvature(curvature, damping=damping)
        self.normalize = normalize
        self.max_examples = max_examples
        self.batch_size = batch_size
        self.seed = seed
        self.fisher = fisher
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.progress = progress

    @property
    def name(self) -> str:
        return f"influence-{self.curvature.kind}" + (f"-{self.normalize}" if self.normalize else "")

    # ----------------------------------------------------------------------------------------- fitting
    def fit(self, train: Sequence[Any]) -> "InfluenceAttributor":
        """Fit the curvature on a seeded sample of ``train`` (or load it from ``cache_dir``)."""
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
        path = self.cache_dir / f"{self.curvature.kind}-factors.safetensors" if self.cache_dir else None
        if path is not None and path.exists():
            tensors, metadata = load_tensors(path, expect=expect)
            self.curvature.load_state(tensors, metadata).to(self.adapter.device)
            return self
        self.curvature.fit(self.adapter, examples, n_train=len(train), batch_size=self.batch_size, seed=self.seed,
                           fisher=self.fisher, progress=self.progress)
        if path is not None:
            save_tensors(path, self.curvature.state, {**expect, **self.curvature.metadata()})
        return self

    # ------------------------------------------------------------------------------------- gradients
    def _gradients(self, records: Sequence[Any], *, measure: bool, first_index: int = 0) -> Grads:
        """Per-example gradients ``{layer: [n, O, I]}`` of the measurement (queries) or log-likelihood (train)."""
        parts: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in self.adapter.layers}
        examples = self.adapter.encode(records, first_index=first_index)
        for batch in self.adapter.batches(examples, self.batch_size):
            with LayerCapture(self.adapter.layers) as capture:
                objective = self.adapter.measure(batch) if measure else self.adapter.log_prob(batch)
                for layer, a, g in capture.output_gradients(objective.sum()):
                    parts[layer.name].append(per_example_gradients(a, g))
        return {name: torch.cat(chunks) for name, chunks in parts.items()}

    def query_gradients(self, queries: Sequence[Any]) -> Grads:
        """Gradients of the measurement ``f(q)`` per query, ``{layer: [n_query, O, I]}``."""
        return self._gradients(queries, measure=True)

    def preconditioned_query_gradients(self, queries: Sequence[Any]) -> Grads:
        """``(N·(F̄ + λI))⁻¹ ∇f(q)`` per query (``{layer: [n_query, O, I]}``); cosine-normalised if asked."""
        if not self.curvature.is_fitted:
            raise UserInputError("call fit(train) before scoring")
        grads = self.query_gradients(queries)
        preconditioned = self.curvature.precondition(grads)
        if self.normalize == "cosine":
            norms = torch.sqrt(sum(g.flatten(1).square().sum(dim=1) for g in grads.values())).clamp(min=1e-30)
            preconditioned = {name: p / norms[:, None, None] for name, p in preconditioned.items()}
        return preconditioned

    # --------------------------------------------------------------------------------------- scoring
    def score(
        self,
        queries: Sequence[Any],
        train: Sequence[Any],
        *,
        per_module: bool = False,
        per_token: bool = False,
    ) -> Scores:
        """Scores ``[n_query, n_train]`` (positive = raises the query's log-probability).

        ``per_module`` adds each layer's share; ``per_token`` adds, for every query and training document, the
        contribution of each of its token positions (``g_tᵀ Q a_t`` summed over layers; sums to the score).
        """
        if len(queries) == 0:
            raise UserInputError("no queries to score")
        preconditioned = self.preconditioned_query_gradients(queries)
        n_query = len(queries)
        columns: list[torch.Tensor] = []
        module_columns: dict[str, list[torch.Tensor]] = {name: [] for name in preconditioned}
        token_rows: list[list[torch.Tensor]] = [[] for _ in range(n_query)]
        chunks = batched(range(len(train)), self.batch_size)
        for chunk in tqdm(chunks, desc=f"{self.name} scores", disable=not self.progress,
                          total=-(-len(train) // self.batch_size)):
            batch = self.adapter.collate(self.adapter.encode(_take(train, chunk), first_index=chunk[0]))
            layer_blocks, tokens = self._score_batch(batch, preconditioned, per_token)
            columns.append(sum(layer_blocks.values()))
            for name, layer_block in layer_blocks.items():
                if per_module:
                    module_columns[name].append(layer_block)
            if tokens is not None:
                mask = self.adapter.token_mask(batch)
                for q_index in range(n_query):
                    token_rows[q_index].extend(tokens[q_index, b][mask[b]].cpu() for b in range(len(chunk)))
        return Scores(
            values=torch.cat(columns, dim=1).cpu(),
            query_ids=record_ids(queries),
            train_ids=record_ids(train),
            method=self.name,
            units=self.units,
            per_module={k: torch.cat(v, dim=1).cpu() for k, v in module_columns.items()} if per_module else None,
            per_token=token_rows if per_token else None,
            metadata={"damping": self.curvature.damping, "n_train": self.curvature.n_train},
        )

    def _score_batch(
        self, batch: Any, preconditioned: Grads, per_token: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """One training batch: per-layer scores ``{layer: [n_query, B]}`` and per-token ``[n_query, B, T]``."""
        layer_blocks: dict[str, torch.Tensor] = {}
        tokens: torch.Tensor | None = None
        squared_norm = torch.zeros(len(batch), dtype=torch.float64, device=self.adapter.device)
        with LayerCapture(self.adapter.layers) as capture:
            objective = self.adapter.log_prob(batch)
            for layer, a, g in capture.output_gradients(objective.sum()):
                q = preconditioned[layer.name].to(a.dtype)
                if per_token:
                    layer_tokens = per_token_inner_products(q, a, g).double()
                    tokens = layer_tokens if tokens is None else tokens + layer_tokens
                    layer_blocks[layer.name] = layer_tokens.sum(dim=-1)
                else:
                    layer_blocks[layer.name] = inner_products(q, a, g).double()
                if self.normalize == "cosine":
                    squared_norm += squared_norms(a, g).double()
        if self.normalize == "cosine":
            scale = squared_norm.sqrt().clamp(min=1e-30)
            layer_blocks = {name: block / scale for name, block in layer_blocks.items()}
            tokens = None if tokens is None else tokens / scale[None, :, None]
        return layer_blocks, tokens

    def self_influence(self, train: Sequence[Any]) -> torch.Tensor:
        """``[n_train]``: ``∇log p(z)ᵀ (N·(F̄ + λI))⁻¹ ∇log p(z)`` — large for atypical or mislabelled examples."""
        if not self.curvature.is_fitted:
            raise UserInputError("call fit(train) before self_influence")
        values = []
        for chunk in batched(range(len(train)), self.batch_size):
            grads = self._gradients(_take(train, chunk), measure=False, first_index=chunk[0])
            preconditioned = self.curvature.precondition(grads)
            values.append(sum((grads[k].double() * preconditioned[k].double()).flatten(1).sum(dim=1) for k in grads))
        return torch.cat(values).cpu()

    @property
    def units(self) -> str:
        if self.normalize == "cosine":
            return "cosine similarity of gradients (positive = raises the query's log-probability)"
        if self.curvature.kind == "identity":
            return "gradient inner product (positive = raises the query's log-probability)"
        return "predicted drop of the query's log-probability if the example were removed (first order)"
