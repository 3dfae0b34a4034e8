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

from llm_attrib.attributors.influence.attributor import InfluenceAttributor
from llm_attrib.attributors.influence.config import DTYPES, NORMALIZATIONS, InfluenceConfig
from llm_attrib.attributors.influence.factors import sample_indices
from llm_attrib.curvature.base import DEFAULT_DAMPING

__all__ = ["DEFAULT_DAMPING", "DTYPES", "NORMALIZATIONS", "InfluenceAttributor", "InfluenceConfig", "sample_indices"]
