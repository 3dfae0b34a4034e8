"""TRAK (Park et al. 2023) for causal LMs: influence in a random low-dimensional gradient subspace, over models.

For each model ``m``, ``φ(x) = Pᵀ∇_θ f(x)`` is a projected per-example gradient (`llm_attrib.projection`: a
Kronecker-factored random projection per tracked layer, ``k = Σ_layers k_o·k_i`` features, the layer's ``[O, I]``
gradient never formed). ``fit(train)`` computes ``Φ [N, k]`` from the training records' ``∇log p(z)`` once and
keeps ``Φ (ΦᵀΦ + NλI)⁻¹`` (float64 solve); ``score`` then needs only the queries' gradients:

    score[q, z] = mean_m  φ_m(q)ᵀ (Φ_mᵀΦ_m + NλI)⁻¹ φ_m(z),   f(q) = log Pr(completion | prompt).

**Positive = the training example raises the query's log-probability.** ``λ`` damps the mean empirical Fisher
``F̄ = ΦᵀΦ/N`` as in `InfluenceAttributor` (an absolute value, or "heuristic": 0.1 × the mean of ``F̄``'s
``min(N, k)`` eigenvalues that can be non-zero, i.e. relative to the kernel's spectrum: with more features than
records, ``k − N`` eigenvalues are zero and a mean over all ``k`` would shrink the damping towards nothing as ``k``
grows), so a score is in that attributor's units: the first-order predicted drop of ``f(q)`` if
``z`` were removed, with the empirical Fisher restricted to the projected subspace, averaged over the models.

Variant, honestly stated: the original linearises a classifier's margin ``log(p/(1-p))`` and re-weights each
training example by ``Q = 1 - p`` so that ``Qφ`` is its projected *loss* gradient. Here the output function is the
log-probability itself (the library's measurement, and minus the training loss), whose gradient already is the
loss gradient, so ``Q = I`` and there is no re-weighting; nor is the original's optional soft-thresholding of
the scores applied. The paper inverts ``ΦᵀΦ`` undamped; ``λ > 0`` keeps the kernel invertible when ``N < k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch

from llm_attrib.adapters.base import Adapter
from llm_attrib.attributors.base import Attributor, make_config
from llm_attrib.capture import LayerCapture
from llm_attrib.curvature import resolve_damping
from llm_attrib.curvature.base import working_precision
from llm_attrib.config import Config, at_least, damping_check, option
from llm_attrib.data import batched, record_ids
from llm_attrib.distributed import gather_columns, shard_batches
from llm_attrib.errors import CurvatureError, UserInputError
from llm_attrib.progress import progress as tracked
from llm_attrib.projection import RANDOM_MATRICES, KroneckerProjection, layer_projections
from llm_attrib.scores import Scores
from llm_attrib.store import load_tensors, save_tensors

FEATURES = "features"


def kernel_features(features: torch.Tensor, damping: float | str) -> tuple[torch.Tensor, float]:
    """``(Φ (ΦᵀΦ + NλI)⁻¹ [N, k] float64, λ)`` for ``features`` ``Φ [N, k]``.

    Solved (Cholesky, float64) with the smaller Gram matrix: ``ΦᵀΦ [k, k]``, or ``ΦΦᵀ [N, N]`` through
    ``Φ (ΦᵀΦ + cI)⁻¹ = (ΦΦᵀ + cI)⁻¹ Φ``. ``λ`` is absolute or "heuristic" (0.1 × ``trace(ΦᵀΦ) / (N·min(N, k))``,
    the mean of the kernel's possibly non-zero eigenvalues, divided by N).
    """
    phi = features.double()
    n, k = phi.shape
    if not torch.isfinite(phi).all():
        raise CurvatureError("the projected training gradients hold NaN/Inf: the model produced non-finite values "
                             "(try float32 instead of fp16/bf16, or check the data)")
    dual = n <= k
    gram = phi @ phi.T if dual else phi.T @ phi
    damping_value = resolve_damping(damping, (torch.trace(gram) / (n * min(n, k))).reshape(1))
    shifted = gram + n * damping_value * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    factor, info = torch.linalg.cholesky_ex(shifted)
    if int(info) > 0:
        raise CurvatureError(f"the TRAK kernel ΦᵀΦ + NλI (λ={damping_value:g}) is singular: "
                             "use a positive damping or 'heuristic'")
    solved = torch.cholesky_solve(phi, factor) if dual else torch.cholesky_solve(phi.T, factor).T
    return solved, damping_value


@dataclass
class ModelFeatures:
    """One model's fitted state: projections per layer, ``Φ`` and ``Φ (ΦᵀΦ + NλI)⁻¹`` ``[N, k]``, the absolute ``λ``."""

    projections: dict[str, KroneckerProjection]
    features: torch.Tensor
    kernel_features: torch.Tensor
    damping: float


def _projection_dim_check(value: int | tuple[int, ...]) -> str | None:
    sizes = value if isinstance(value, tuple) else (value,)
    return None if len(sizes) in (1, 2) and all(isinstance(k, int) and k >= 1 for k in sizes) else \
        "a positive int or a pair (k_o, k_i) of positive ints"


@dataclass(frozen=True)
class TrakConfig(Config):
    """Options of `TrakAttributor`."""

    projection_dim: int | tuple = option(32, "projected size (k_o, k_i) per tracked layer, or one int for both; "
                                             "clamped to the layer's (O, I)", check=_projection_dim_check)
    projection: str = option("gaussian", "random projection matrices", choices=tuple(RANDOM_MATRICES))
    damping: float | str = option("heuristic", "damping of the mean empirical Fisher in the projected space: "
                                               "absolute, or 'heuristic' (0.1 x the mean of its min(N, k) possibly "
                                               "non-zero eigenvalues)", check=damping_check)
    batch_size: int = option(8, "examples per forward/backward pass", check=at_least(1))
    seed: int = option(0, "seeds the projections (the same for every model)")


class TrakAttributor(Attributor):
    """TRAK scores, averaged over models; see the module docstring for the variant, sign and units.

    Args:
        models: one adapter per model, all tracking the same layers: a list of adapters, or a
            `llm_attrib.attributors.checkpoints.Checkpoints` (models or folders, loaded one at a time).
        config: a `TrakConfig`; keyword ``options`` are its fields and override it.
        cache_dir: save each model's training features there and reload them on a later fit with the same model,
            data and projection; a cache made for something else is refused.
        progress: show progress.
    """

    kind = "trak"
    name = "trak"
    config_class = TrakConfig
    config: TrakConfig

    def __init__(self, models: Sequence[Adapter], *, config: TrakConfig | None = None,
                 cache_dir: str | Path | None = None, progress: bool = False, **options: Any):
        if len(models) == 0:
            raise UserInputError("TRAK needs at least one model")
        self.config = make_config(TrakConfig, config, options)
        self.models = models
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.progress = progress
        self._fitted: list[ModelFeatures] = []
        self._train_fingerprint: str | None = None
        self._train_ids: list[Any] = []

    @property
    def units(self) -> str:
        return ("predicted drop of the query's log-probability if the example were removed (first order; empirical "
                f"Fisher in a random subspace), averaged over {len(self.models)} model(s)")

    @property
    def is_fitted(self) -> bool:
        return bool(self._fitted)

    def _projections(self, adapter: Adapter) -> dict[str, KroneckerProjection]:
        return layer_projections(adapter.layers, self.config.projection_dim, self.config.projection, self.config.seed)

    # ----------------------------------------------------------------------------------------- fitting
    def fit(self, train: Sequence[Any]) -> "TrakAttributor":
        """Project every training record's ``∇log p(z)`` on each model (or load them from ``cache_dir``) and solve
        the kernel. Under several processes each projects its contiguous shard and the features are gathered."""
        if len(train) == 0:
            raise UserInputError("the training set is empty")
        self._remember_train(train)
        self._fitted = []
        for m in range(len(self.models)):
            adapter = self.models[m]
            projections = self._projections(adapter)
            features = self._train_features(m, adapter, projections, train)
            solved, damping = kernel_features(features, self.config.damping)
            # contiguous, like a reloaded copy: the same matmul layout gives bitwise-equal scores after from_pretrained
            self._fitted.append(ModelFeatures(projections, features, solved.to(features.dtype).contiguous(), damping))
        return self

    def _train_features(self, m: int, adapter: Adapter, projections: Mapping[str, KroneckerProjection],
                        train: Sequence[Any]) -> torch.Tensor:
        """``Φ [N, k]`` of model ``m``, from ``cache_dir`` when it holds them for this model, data and projection."""
        expect = {"kind": "trak-features", "model": adapter.fingerprint(), "data": self._train_fingerprint,
                  "n_train": len(train), "projection": self.config.projection,
                  "projection_dim": self.config.projection_dim, "seed": self.config.seed}
        path = self.cache_dir / f"trak-features-model{m:03d}.safetensors" if self.cache_dir is not None else None
        if path is not None and path.exists():
            return load_tensors(path, expect=expect)[0][FEATURES]
        local = projected_gradients(adapter, projections, shard_batches(train, self.config.batch_size),
                                    measure=False, progress=self.progress)
        features = gather_columns(local.T).T.contiguous()
        if path is not None:
            save_tensors(path, {FEATURES: features}, expect)
        return features

    # ------------------------------------------------------------------------------------- persistence
    def _bound_to(self) -> dict[str, Any]:
        return {"models": [self.models[m].fingerprint() for m in range(len(self.models))]}

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {}
        for m, fitted in enumerate(self._fitted):
            tensors[f"model{m:03d}/{FEATURES}"] = fitted.features
            tensors[f"model{m:03d}/kernel_features"] = fitted.kernel_features
        return tensors, {"dampings": [f.damping for f in self._fitted], **self._train_metadata()}

    def _load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        self._restore_train(metadata)
        self._fitted = [ModelFeatures(self._projections(self.models[m]), tensors[f"model{m:03d}/{FEATURES}"],
                                      tensors[f"model{m:03d}/kernel_features"], damping)
                        for m, damping in enumerate(metadata["dampings"])]

    # --------------------------------------------------------------------------------------- scoring
    def score(self, queries: Sequence[Any], train: Iterable[Any]) -> Scores:
        """Scores ``[n_query, n_train]`` (positive = raises the query's log-probability); ``train`` must be the
        records given to `fit` (checked by fingerprint): their features are reused, not recomputed."""
        if len(queries) == 0:
            raise UserInputError("no queries to score")
        self._check_same_train(train)
        values = torch.zeros(len(queries), len(self._train_ids), dtype=torch.float64)
        for m, fitted in enumerate(self._fitted):
            query_features = projected_gradients(self.models[m], fitted.projections,
                                                 _numbered(queries, self.config.batch_size), measure=True,
                                                 progress=self.progress)
            values += (query_features.double() @ fitted.kernel_features.double().T).cpu()
        metadata = {"damping": self.config.damping, "damping_values": [f.damping for f in self._fitted],
                    "n_train": len(self._train_ids), "n_models": len(self._fitted),
                    "projection_dim": self.config.projection_dim}
        return Scores(values / len(self._fitted), record_ids(queries), list(self._train_ids), method=self.name,
                      units=self.units, metadata=metadata)

    def self_influence(self, train: Sequence[Any]) -> torch.Tensor:
        """``[n_train]``: ``mean_m φ_m(z)ᵀ (Φ_mᵀΦ_m + NλI)⁻¹ φ_m(z)`` of the fitted records (``train`` must be them)."""
        self._check_same_train(train)
        return sum((f.features.double() * f.kernel_features.double()).sum(dim=1).cpu()
                   for f in self._fitted) / len(self._fitted)


def _numbered(records: Sequence[Any], batch_size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    """``(index of the first record, batch)`` over all of ``records``."""
    return ((i * batch_size, chunk) for i, chunk in enumerate(batched(records, batch_size)))


def projected_gradients(adapter: Adapter, projections: Mapping[str, KroneckerProjection],
                        chunks: Iterable[tuple[int, Sequence[Any]]], *, measure: bool,
                        progress: bool = False) -> torch.Tensor:
    """``[n, k]``: each record's projected gradient of the measurement ``f`` (``measure``) or of ``log p``, the
    tracked layers' ``vec(P_gᵀ G P_a)`` concatenated, in working precision (float32; float64 for a float64 model).
    No chunks (a process whose shard is empty) give ``[0, k]``, so that gathering still works."""
    weight = adapter.layers[0].module.weight
    rows = [torch.zeros(0, sum(p.dim for p in projections.values()), device=weight.device,
                        dtype=working_precision(weight.detach()[:0]).dtype)]
    for start, records in tracked(chunks, "trak gradients", enabled=progress):
        batch = adapter.collate(adapter.encode(records, first_index=start))
        with LayerCapture(adapter.layers) as capture:
            objective = adapter.measure(batch) if measure else adapter.log_prob(batch)
            rows.append(torch.cat([projections[layer.name].project(working_precision(a), working_precision(g))
                                   for layer, a, g in capture.output_gradients(objective.sum())], dim=1))
    return torch.cat(rows)
