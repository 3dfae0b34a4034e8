"""AirRep (Sun et al. 2025): an encoder trained so that its similarities rank training data by measured effect.

``fit(train)``:

1. **Training queries.** A seeded ``query_fraction`` of the training records is held out as queries; the rest is
   the *pool*. The queries to be explained later are never seen by ``fit`` (no ground truth leaks into it).
2. **Supervision** (`llm_attrib.retraining.lds`, the LDS machinery): ``n_subsets`` random α-subsets of the pool,
   a model retrained on each (``retrain(records, seed)``, cached and resumable), and each training query's
   measurement ``y[m, q] = log Pr(completion | prompt)`` under the model of subset ``m``. Targets are standardised
   per query over the subsets, ``t[q, m] = (y[m, q] − mean_m y[·, q]) / std_m y[·, q]``, clipped to ±10.
3. **Encoder** ``e(x) = W · (h(x) − μ) / σ``: ``h(x) [d]`` is the target model's own hidden states (the embedding
   output and every block), mean-pooled over the record's tokens and concatenated; ``μ, σ [d]`` standardise them
   over the training records; ``W [dim, d]`` is trained. The target model stays frozen.
4. **Group score** by attention pooling: with ``s_qz = e(q)ᵀe(z)``,
   ``g(q, S) = Σ_{z∈S} softmax_{z∈S}(|s_qz| / τ) · s_qz``.
5. **Loss**: weighted pairwise ranking (RankNet) over pairs of subsets: for every query and every pair ``(i, j)``
   with ``t[q, i] > t[q, j]``, ``min(t[q, i] − t[q, j], w_max) · log(1 + exp(−(g(q, S_i) − g(q, S_j))))``,
   averaged over the pairs. Full-batch AdamW, ``epochs`` steps, seeded (bitwise reproducible on CPU).

``score(q, z) = e(q)ᵀ e(z)``: embed once, then dot products. **Positive = the training example raises the
query's log-probability** (the targets increase with it), but the scale is a learned similarity with no unit.

Variant, honestly stated: the paper fine-tunes a separate pretrained embedding model (GTE-small) on many subsets
of a large corpus. Here the encoder starts from the target model itself (model-aligned, nothing to download) and
only the projection ``W`` is trained: with tens of subsets × tens of training queries of supervision, fine-tuning
a whole transformer would overfit, while a projection of frozen features trains in seconds (a learned bilinear
similarity ``hᵀ WᵀW h'`` of standardised hidden states). Concatenating every layer keeps the lexical signal of
the embedding layer (what TF-IDF exploits) next to the contextual one of the blocks. The paper's ``τ = 1`` is kept:
its |s|-softmax weights a subset's most similar members more, a non-additive group effect; on a synthetic problem
with *additive* effects a large ``τ`` (near-mean pooling) recovers them reliably and ``τ = 1`` less so (tests).
The attention pooling forms a ``[n_query, n_subsets, n_pool]`` tensor: fine for these sizes, not for a pool of
millions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import torch
from torch import nn

from llm_attrib.adapters.causal_lm import CausalLMAdapter
from llm_attrib.attributors.base import Attributor, make_config
from llm_attrib.config import Config, at_least, in_open_interval, option
from llm_attrib.data import Columns, record_ids
from llm_attrib.errors import UserInputError
from llm_attrib.retraining.counterfactual import Measure, Retrain
from llm_attrib.retraining.lds import lds_ground_truth
from llm_attrib.retraining.measure import LogLikelihoodMeasure
from llm_attrib.scores import Scores
from llm_attrib.store import load_tensors, model_fingerprint, save_tensors

MAX_TARGET = 10.0
"""Standardised targets are clipped to ± this (one outlying subset must not dominate the pairs)."""

INIT_SCALE = 0.1
"""``W`` starts at this × a Gaussian of variance ``1/d``: similarities start small, so the attention starts near
uniform and the group score near the subset's mean similarity (a linear datamodel); at scale 1 the softmax starts
near an argmax and training is slower and worse (internal validation on the role-play benchmark's training
queries: LDS 0.17 vs 0.13)."""


class SubsetRetraining(Protocol):
    """What the registry's factory needs from a training history: retraining the model on any subset."""

    cache_dir: Path | None

    def retrain(self, records: Sequence[Mapping[str, Any]], seed: int) -> nn.Module:
        """A model trained from a fresh, seeded initialisation on exactly ``records``."""

    def settings(self) -> dict[str, Any]:
        """What changes a retrained model (config, epochs, lr…): part of the cache key of the subset outcomes."""


# ------------------------------------------------------------------------------------------- the objective
def attention_pool(similarities: torch.Tensor, masks: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Group scores ``[Q, M]``: ``g[q, m] = Σ_{z∈S_m} softmax_{z∈S_m}(|s[q, z]| / τ) · s[q, z]``.

    similarities: ``[Q, N]`` ``s[q, z] = e(q)ᵀe(z)``; masks: ``[M, N]`` booleans (True = ``z ∈ S_m``), none empty.
    """
    if not bool(masks.any(dim=1).all()):
        raise UserInputError("every subset must hold at least one training example")
    logits = (similarities.abs() / temperature).unsqueeze(1).masked_fill(~masks.unsqueeze(0), float("-inf"))
    weights = torch.softmax(logits, dim=-1)
    return (weights * similarities.unsqueeze(1)).sum(dim=-1)


def pairwise_ranking_loss(predicted: torch.Tensor, targets: torch.Tensor,
                          max_weight: float = MAX_TARGET) -> torch.Tensor:
    """Weighted RankNet loss: mean over ``(q, i, j)`` with ``t[q, i] > t[q, j]`` of
    ``min(t[q, i] − t[q, j], max_weight) · softplus(−(p[q, i] − p[q, j]))``; ``predicted``, ``targets`` ``[Q, M]``."""
    target_gaps = targets.unsqueeze(2) - targets.unsqueeze(1)
    predicted_gaps = predicted.unsqueeze(2) - predicted.unsqueeze(1)
    ordered = target_gaps > 0
    if not bool(ordered.any()):
        raise UserInputError("the subset outcomes do not vary: no pair of subsets to rank")
    weights = target_gaps[ordered].clamp(max=max_weight)
    return (weights * nn.functional.softplus(-predicted_gaps[ordered])).mean()


def standardised_targets(outcomes: torch.Tensor) -> torch.Tensor:
    """``[Q, M]`` per-query z-scores over the subsets of ``outcomes`` ``[M, Q]`` (higher = more likely), clipped to
    ±`MAX_TARGET`; a query whose outcome never varies gets zeros."""
    centred = outcomes - outcomes.mean(dim=0, keepdim=True)
    spread = outcomes.std(dim=0, keepdim=True)
    return (centred / torch.where(spread > 0, spread, torch.ones_like(spread))).clamp(-MAX_TARGET, MAX_TARGET).T


class ProjectionHead(nn.Module):
    """``e = W (h − μ) / σ``: ``h [.., d]`` frozen features → ``e [.., dim]``; ``μ, σ`` are fixed buffers."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        self.weight = nn.Parameter(weight)

    @classmethod
    def initial(cls, features: torch.Tensor, dim: int, seed: int) -> "ProjectionHead":
        """Standardisation from ``features [N, d]`` and a seeded Gaussian ``W`` (standard deviation
        `INIT_SCALE` ``/ √d``)."""
        d = features.shape[1]
        scale = features.std(dim=0)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(dim, d, generator=generator, dtype=features.dtype) * INIT_SCALE / d**0.5
        return cls(features.mean(dim=0), scale, weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return ((features - self.mean) / self.scale) @ self.weight.T


def train_encoder(query_features: torch.Tensor, pool_features: torch.Tensor, masks: torch.Tensor,
                  outcomes: torch.Tensor, *, dim: int = 64, temperature: float = 1.0, max_weight: float = MAX_TARGET,
                  epochs: int = 300, lr: float = 3e-3, weight_decay: float = 0.1, seed: int = 0
                  ) -> tuple[ProjectionHead, list[float]]:
    """Train the projection on ``[Q, d]`` query and ``[P, d]`` pool features, ``[M, P]`` subset masks and ``[M, Q]``
    outcomes (higher = more likely) by full-batch AdamW on `pairwise_ranking_loss` of the `attention_pool` scores.
    Returns the head and the loss before each step."""
    targets = standardised_targets(outcomes.to(query_features.dtype))
    head = ProjectionHead.initial(torch.cat([query_features, pool_features]), dim, seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(epochs):
        similarities = head(query_features) @ head(pool_features).T
        loss = pairwise_ranking_loss(attention_pool(similarities, masks, temperature), targets, max_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return head.eval(), losses


# ------------------------------------------------------------------------------------------- features
@torch.no_grad()
def hidden_state_features(model: nn.Module, tokenizer: Any, records: Sequence[Mapping[str, Any]], *,
                          batch_size: int = 32, padding_side: str = "right", columns: Columns = Columns()
                          ) -> torch.Tensor:
    """``[N, d]`` float64: each record's hidden states (embedding output and every block; ``d`` = (layers + 1) ×
    hidden size) mean-pooled over its tokens (prompt and completion; padding excluded), layers concatenated.
    Positions count real tokens only, so neither batch size nor padding side changes the result."""
    was_training = model.training
    adapter = CausalLMAdapter(model, tokenizer, modules="all", columns=columns, padding_side=padding_side)  # eval mode
    parts = []
    for batch in adapter.batches(adapter.encode(records), batch_size):
        hidden = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids, output_hidden_states=True).hidden_states
        mask = batch.attention_mask.unsqueeze(-1).double()
        parts.append(torch.cat([(h.double() * mask).sum(dim=1) / mask.sum(dim=1) for h in hidden], dim=1).cpu())
    model.train(was_training)
    return torch.cat(parts)


def split_queries(n: int, query_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded ``(training-query indices, pool indices)`` of ``n`` records, both sorted; ``round(fraction · n)``
    queries, at least 1, and at least 2 records left in the pool."""
    n_queries = max(1, round(query_fraction * n))
    if not 0.0 < query_fraction < 1.0 or n - n_queries < 2:
        raise UserInputError(f"query_fraction={query_fraction} of {n} training records leaves no pool to subsample "
                             "(need at least 2 records besides the held-out training queries)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[:n_queries]), sorted(order[n_queries:])


# ------------------------------------------------------------------------------------------- the attributor
@dataclass(frozen=True)
class AirRepConfig(Config):
    """Options of `AirRepAttributor`. The training defaults (epochs, lr, weight_decay) were chosen by LDS on
    held-out *training* queries of the role-play benchmark (half trained on, half validated), never on the
    evaluation queries."""

    n_subsets: int = option(64, "subsets of the pool, one retraining each", check=at_least(2))
    alpha: float = option(0.5, "fraction of the pool in each subset", check=in_open_interval(0.0, 1.0))
    query_fraction: float = option(0.25, "fraction of the training records held out as training queries",
                                   check=in_open_interval(0.0, 1.0))
    dim: int = option(64, "embedding dimension of the trained projection", check=at_least(1))
    temperature: float = option(1.0, "tau of the attention pooling", check=in_open_interval(0.0, math.inf))
    max_weight: float = option(MAX_TARGET, "clip of the pair weights t_i - t_j", check=in_open_interval(0.0, math.inf))
    epochs: int = option(300, "full-batch AdamW steps on the projection", check=at_least(1))
    lr: float = option(3e-3, "AdamW learning rate", check=in_open_interval(0.0, math.inf))
    weight_decay: float = option(0.1, "AdamW weight decay", check=at_least(0.0))
    batch_size: int = option(32, "records per feature forward pass (scores do not depend on it)", check=at_least(1))
    padding_side: str = option("right", "padding side of the feature passes (scores do not depend on it)",
                               choices=("left", "right"))
    seed: int = option(0, "the split, the subsets, the retraining seeds and the projection's initialisation")

    def training_options(self) -> dict[str, Any]:
        """The options that change the trained encoder (the cache key of its outcomes and weights)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("batch_size", "padding_side")}


class AirRepAttributor(Attributor):
    """AirRep scores; see the module docstring for the pipeline, the variant, the sign and the units.

    Args:
        model: the causal LM to explain (frozen; its hidden states are the encoder's features).
        tokenizer: its tokenizer.
        retrain: ``retrain(records, seed) -> model``, a model trained like ``model`` on exactly ``records``; needed
            by `fit` only (not to score with an encoder loaded by `from_pretrained`).
        config: an `AirRepConfig`; keyword ``options`` are its fields and override it.
        retrain_settings: what changes a retrained model (config, epochs, lr…): the cache key of the outcomes.
        measure: ``measure(model, records) -> [n]`` (default: log Pr(completion | prompt), `LogLikelihoodMeasure`).
        cache_dir: subset outcomes (``airrep-trials/``, resumable) and the trained encoder
            (``airrep-encoder.safetensors``), reused on a later fit with the same model, data and arguments and
            refused (`CacheMismatchError`) when made for others.
        columns: the records' column names.
    """

    kind = "airrep"
    name = "airrep"
    config_class = AirRepConfig
    config: AirRepConfig
    units = ("learned similarity e(q)ᵀe(z) of an encoder trained to rank subsets by measured log-probability "
             "(positive = raises the query's log-probability; arbitrary scale, not log-probability units)")

    def __init__(self, model: nn.Module, tokenizer: Any, retrain: Retrain | None = None, *,
                 config: AirRepConfig | None = None, retrain_settings: Mapping[str, Any] | None = None,
                 measure: Measure | None = None, cache_dir: str | Path | None = None, columns: Columns = Columns(),
                 **options: Any):
        self.config = make_config(AirRepConfig, config, options)
        self.model = model
        self.tokenizer = tokenizer
        self.retrain = retrain
        self.retrain_settings = dict(retrain_settings or {})
        self.measure = measure if measure is not None else LogLikelihoodMeasure(tokenizer)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.columns = columns
        self.head: ProjectionHead | None = None
        self.retrain_seconds = 0.0
        self.losses: list[float] = []
        self._train_embeddings = torch.zeros(0, 0, dtype=torch.float64)
        self._train_fingerprint: str | None = None
        self._train_ids: list[Any] = []

    @property
    def is_fitted(self) -> bool:
        return self.head is not None

    def _bound_to(self) -> dict[str, Any]:
        return {"model": model_fingerprint(self.model), "columns": repr(self.columns)}

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"head/{name}": t for name, t in self.head.state_dict().items()}
        return {**tensors, "train_embeddings": self._train_embeddings}, {
            "retrain_seconds": self.retrain_seconds, **self._train_metadata()}

    def _load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        self.head = ProjectionHead(tensors["head/mean"], tensors["head/scale"], tensors["head/weight"]).eval()
        self._train_embeddings = tensors["train_embeddings"]
        self.retrain_seconds = float(metadata["retrain_seconds"])
        self._restore_train(metadata)

    def _features(self, records: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        return hidden_state_features(self.model, self.tokenizer, records, batch_size=self.config.batch_size,
                                     padding_side=self.config.padding_side, columns=self.columns)

    # ----------------------------------------------------------------------------------------- fitting
    def fit(self, train: Sequence[Mapping[str, Any]]) -> "AirRepAttributor":
        """Measure subset outcomes on held-out training queries (or load them), train the projection (or load it)
        and embed the training records. Leaves the global RNG as it found it."""
        if len(train) == 0:
            raise UserInputError("the training set is empty")
        if self.retrain is None:
            raise UserInputError("AirRep learns from models retrained on subsets of the training data: pass "
                                 "retrain=(records, seed) -> model to fit it, or load a fitted one with from_pretrained")
        self._remember_train(train)
        features = self._features(train)
        expect = {"kind": "airrep-encoder", "model": model_fingerprint(self.model), "data": self._train_fingerprint,
                  "retrain": self.retrain_settings, **self.config.training_options()}
        path = None if self.cache_dir is None else self.cache_dir / "airrep-encoder.safetensors"
        with torch.random.fork_rng(devices=[]):
            if path is not None and path.exists():
                tensors = load_tensors(path, expect=expect)[0]
                self.head = ProjectionHead(tensors["mean"], tensors["scale"], tensors["weight"]).eval()
            else:
                self.head = self._train(train, features)
                if path is not None:
                    save_tensors(path, {name: t for name, t in self.head.state_dict().items()}, expect)
        with torch.no_grad():
            self._train_embeddings = self.head(features)
        return self

    def _train(self, train: Sequence[Mapping[str, Any]], features: torch.Tensor) -> ProjectionHead:
        options = self.config.training_options()
        queries, pool = split_queries(len(train), options["query_fraction"], options["seed"])
        start = time.perf_counter()
        truth = lds_ground_truth(
            [train[i] for i in pool], [train[i] for i in queries], retrain=self.retrain, measure=self.measure,
            train_ids=pool, query_ids=queries, n_subsets=options["n_subsets"], alpha=options["alpha"],
            seed=options["seed"], cache_dir=None if self.cache_dir is None else self.cache_dir / "airrep-trials",
            settings={"method": "airrep", "query_fraction": options["query_fraction"], **self.retrain_settings})
        self.retrain_seconds = time.perf_counter() - start
        head, self.losses = train_encoder(
            features[queries], features[pool], truth.masks, truth.outcomes, dim=options["dim"],
            temperature=options["temperature"], max_weight=options["max_weight"], epochs=options["epochs"],
            lr=options["lr"], weight_decay=options["weight_decay"], seed=options["seed"])
        return head

    # --------------------------------------------------------------------------------------- scoring
    def embed(self, records: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """``[n, dim]`` float64 embeddings ``e(x)`` of ``records`` (needs `fit`)."""
        self._check_fitted()
        with torch.no_grad():
            return self.head(self._features(records))

    def score(self, queries: Sequence[Mapping[str, Any]], train: Sequence[Mapping[str, Any]]) -> Scores:
        """Scores ``[n_query, n_train]`` = ``e(q)ᵀe(z)`` (positive = raises the query's log-probability; arbitrary
        scale); ``train`` must be the records given to `fit` (checked by fingerprint): their embeddings are reused."""
        if len(queries) == 0:
            raise UserInputError("no queries to score")
        self._check_same_train(train)
        return Scores(values=self.embed(queries) @ self._train_embeddings.T, query_ids=record_ids(queries),
                      train_ids=list(self._train_ids), method=self.name, units=self.units,
                      metadata={**self.config.training_options(), "retrain_seconds": self.retrain_seconds})
