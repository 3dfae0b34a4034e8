"""Influence averaged over training checkpoints (SOURCE-style, Bae et al. 2024) and over independent Fisher samples.

``score[q, z] = Σ_k w_k · (1/S) Σ_s ∇f(q; θ_k)ᵀ (N·(F̄_{k,s} + λI))⁻¹ ∇log p(z; θ_k)`` with ``w_k = η_k / Σ_j η_j``
(``η_k``: the learning rate × steps checkpoint ``θ_k`` stands for; equal weights if none are given) and
``F̄_{k,s}`` the curvature fitted at ``θ_k`` with seed ``seed + s`` (other sampled Fisher targets, and another fit
sample when ``max_examples`` is set), or with ``shared_curvature`` the last checkpoint's ``F̄_{K,s}`` at every
checkpoint (SOURCE's stationary-curvature simplification: one fit, ``K`` scorings). Each term is a plain `InfluenceAttributor` with the ensemble's options, so a
weighted average of scores keeps their sign and units: **positive = the training example raises the query's
log-probability**. One checkpoint with one Fisher sample is plain influence; the cost is ``K·S`` fits and scorings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from llm_attrib.adapters.base import Adapter
from llm_attrib.attributors.base import Attributor, make_config
from llm_attrib.attributors.influence.attributor import InfluenceAttributor
from llm_attrib.attributors.influence.config import InfluenceConfig
from llm_attrib.attributors.tracin import weighted_sum
from llm_attrib.config import ConfigError, at_least, option
from llm_attrib.errors import UserInputError
from llm_attrib.scores import Scores


def _weights_check(value: tuple) -> str | None:
    ok = all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in value)
    return None if ok and (not value or sum(value) > 0) else "finite non-negative numbers with a positive sum"


@dataclass(frozen=True)
class EnsembleConfig(InfluenceConfig):
    """`InfluenceConfig` (every member's options) plus the ensemble's weights and Fisher samples."""

    weights: tuple = option((), "weight of each checkpoint (SOURCE: its learning rate x steps), normalised to sum "
                                "to 1; empty = equal weights", check=_weights_check, flag=False)
    fisher_samples: int = option(1, "independent curvature fits per checkpoint (seeds seed, seed+1, ...), their "
                                    "scores averaged", check=at_least(1))
    shared_curvature: bool = option(False, "fit the curvature on the last checkpoint only and apply it at every "
                                           "checkpoint's gradients (one fit instead of one per checkpoint)")

    def validate(self) -> None:
        super().validate()
        if self.shared_curvature and self.layer_partitions > 1:
            raise ConfigError("shared_curvature", "shares factors held in memory: use layer_partitions=1")
        if self.shared_curvature and self.refine_steps:
            raise ConfigError("shared_curvature", "cannot refine: the exact Fisher belongs to each checkpoint's own "
                                                  "model; set refine_steps=0")

    def member(self, sample: int) -> InfluenceConfig:
        """The `InfluenceConfig` of Fisher sample ``sample`` (seed ``seed + sample``)."""
        own = {f.name for f in fields(InfluenceConfig)}
        return InfluenceConfig(**{**{k: v for k, v in self.to_dict().items() if k in own}, "seed": self.seed + sample})


class InfluenceEnsemble(Attributor):
    """Influence averaged over checkpoints and Fisher samples; see the module docstring for sign and units.

    Args:
        checkpoints: one adapter per checkpoint, all tracking the same layers (a list of adapters or a
            `llm_attrib.attributors.checkpoints.Checkpoints`); every member's model is held once fitted.
        weights: ``η_k`` per checkpoint (shorthand for ``config.weights``).
        config: an `EnsembleConfig`; keyword ``options`` are its fields and override it.
        cache_dir: each member's factors are cached in ``checkpoint-KKK-sample-SS/`` there.
    """

    kind = "influence-ensemble"
    config_class = EnsembleConfig
    config: EnsembleConfig

    def __init__(self, checkpoints: Sequence[Adapter], weights: Sequence[float] | None = None, *,
                 config: EnsembleConfig | None = None, cache_dir: str | Path | None = None, progress: bool = False,
                 **options: Any):
        if weights is not None:
            options["weights"] = tuple(float(w) for w in weights)
        self.config = make_config(EnsembleConfig, config, options)
        if len(checkpoints) == 0:
            raise UserInputError("an influence ensemble needs at least one checkpoint")
        if self.config.weights and len(self.config.weights) != len(checkpoints):
            raise ConfigError("weights", f"must give one weight per checkpoint ({len(checkpoints)}), not "
                                         f"{len(self.config.weights)}")
        raw = self.config.weights or (1.0,) * len(checkpoints)
        samples = self.config.fisher_samples
        self.weights = [w / sum(raw) / samples for w in raw for _ in range(samples)]
        """One per member, checkpoint-major: ``w_k / S``."""
        root = Path(cache_dir) if cache_dir is not None else None
        self.members = [
            InfluenceAttributor(checkpoints[k], config=self.config.member(s), progress=progress,
                                cache_dir=None if root is None else root / f"checkpoint-{k:03d}-sample-{s:02d}")
            for k in range(len(checkpoints)) for s in range(samples)]

    @property
    def name(self) -> str:
        return f"{self.members[-1].name}-ensemble"

    @property
    def units(self) -> str:
        return f"weighted average over checkpoints and Fisher samples of: {self.members[-1].units}"

    @property
    def is_fitted(self) -> bool:
        return all(member.is_fitted for member in self.members)

    def _bound_to(self) -> dict[str, Any]:
        return {"members": [member._bound_to() for member in self.members]}

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, metadata = {}, []
        for m, member in enumerate(self.members):
            state, meta = member._state()
            tensors.update({f"member{m:03d}/{key}": value for key, value in state.items()})
            metadata.append(meta)
        return tensors, {"members": metadata}

    def _load_state(self, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
        for m, (member, meta) in enumerate(zip(self.members, metadata["members"])):
            prefix = f"member{m:03d}/"
            member._load_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, meta)

    def fit(self, train: Sequence[Any]) -> "InfluenceEnsemble":
        """Fit every member's curvature on ``train`` (each on its own seeded sample); with ``shared_curvature`` only
        the last checkpoint's members are fitted and each earlier member gets its Fisher sample's factors."""
        samples = self.config.fisher_samples
        last = self.members[-samples:]
        for member in last if self.config.shared_curvature else self.members:
            member.fit(train)
        if self.config.shared_curvature:
            for m, member in enumerate(self.members[:-samples]):
                source = last[m % samples]
                member.curvature.load_state(dict(source.curvature.state), source.curvature.metadata())
        return self

    def score(self, queries: Sequence[Any], train: Iterable[Any], *, per_module: bool = False,
              per_token: bool = False, output_dir: str | Path | None = None) -> Scores:
        """Scores ``[n_query, n_train]`` (positive = raises the query's log-probability): the members' weighted
        average. ``train`` is read once per member; options as in `InfluenceAttributor.score`, each member's
        chunks in ``member-MMM/`` of ``output_dir``."""
        if len(self.members) > 1 and iter(train) is train:
            raise UserInputError("the training data is read once per ensemble member: pass a list, a Dataset or a "
                                 "re-iterable IterableDataset, not a one-shot iterator")
        parts = [member.score(queries, train, per_module=per_module, per_token=per_token,
                              output_dir=None if output_dir is None else Path(output_dir) / f"member-{m:03d}")
                 for m, member in enumerate(self.members)]
        return weighted_sum(parts, self.weights, method=self.name, units=self.units,
                            metadata={"weights": self.weights, "damping": self.members[0].curvature.damping,
                                      "n_train": self.members[0].curvature.n_train})

    def self_influence(self, train: Sequence[Any]) -> torch.Tensor:
        """``[n_train]``: the members' self-influence, weighted like the scores."""
        return sum(w * member.self_influence(train) for w, member in zip(self.weights, self.members))
