"""`InfluenceConfig`: the options of `InfluenceAttributor`, frozen and validated at construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from llm_attrib.config import Config, ConfigError, at_least, damping_check, option
from llm_attrib.curvature import CURVATURES
from llm_attrib.attributors.influence.refine import EIGENVALUES
from llm_attrib.curvature.base import DEFAULT_DAMPING, FISHER_TARGETS

NORMALIZATIONS = (None, "cosine", "relative")
"""None (raw influence), "cosine" (grad-cos) or "relative" (RelatIF)."""

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}
"""Names of the contraction dtypes `InfluenceConfig.dtype` accepts."""


UNDAMPED = {"identity": "identity curvature (grad-dot)", "adam": "adam preconditioning (its epsilon is the optimizer's)"}
"""Curvatures that apply no damping, and how an error names them."""


def _damping_or_default(value: Any) -> str | None:
    return None if value is None else damping_check(value)


@dataclass(frozen=True)
class InfluenceConfig(Config):
    """Options of `InfluenceAttributor` (`llm_attrib.attributors.influence` states sign and units)."""

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
    refine_steps: int = option(0, "refine the query solve towards the exact damped Fisher of the fit sample (all "
                                  "layers together) by this many preconditioned CG steps, one pass over the sample "
                                  "each (0 = the curvature's own solve; self-influence stays unrefined)",
                               check=at_least(0))

    def validate(self) -> None:
        if self.rescore_top is not None and self.query_rank is None:
            raise ConfigError("rescore_top", "re-scores the top records of low-rank scores: give query_rank too")
        if self.refine_steps:
            if self.curvature not in EIGENVALUES:
                raise ConfigError("refine_steps", f"needs a factored preconditioner ({', '.join(EIGENVALUES)}), not "
                                                  f"{self.curvature!r} curvature")
            if self.layer_partitions > 1:
                raise ConfigError("refine_steps", "the exact Fisher couples every tracked layer: use layer_partitions=1")
            if self.normalize == "relative":
                raise ConfigError("refine_steps", "refines the query solve only; RelatIF's self-influence would stay "
                                                  "unrefined: use normalize none or cosine")
        if self.curvature in UNDAMPED and self.damping is not None:
            raise ConfigError("damping", f"cannot be applied by {UNDAMPED[self.curvature]}: leave it unset, "
                                         f"not {self.damping!r}")

    @property
    def effective_damping(self) -> float | str | None:
        """The damping the curvature applies: the given one, `DEFAULT_DAMPING`, or None for identity."""
        if self.curvature in UNDAMPED:
            return None
        return DEFAULT_DAMPING if self.damping is None else self.damping

    @property
    def torch_dtype(self) -> torch.dtype | None:
        return None if self.dtype is None else DTYPES[self.dtype]
