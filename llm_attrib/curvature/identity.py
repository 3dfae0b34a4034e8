"""Identity curvature: no preconditioning. Scores are plain gradient inner products ("grad-dot")."""

from __future__ import annotations

from llm_attrib.curvature.base import Curvature, Grads
from llm_attrib.errors import UserInputError


class IdentityCurvature(Curvature):
    """``precondition(G) = G``: neither the curvature, the damping nor the 1/N scale is applied."""

    kind = "identity"
    passes = 0

    def __init__(self, damping: None = None):
        if damping is not None:
            raise UserInputError(f"identity curvature (grad-dot) applies no damping; leave damping unset, not {damping!r}")
        self.damping = None  # nothing to damp: reported as such in score metadata
        self.state = {}
        self.n_train = None

    def _accumulate(self, stage, layer, a, g, mask, sums) -> None:
        """Nothing to collect (``passes = 0``)."""

    def _finalize(self, stage, layers, sums) -> None:
        """Nothing to finalise (``passes = 0``)."""

    def _apply(self, grads: Grads) -> Grads:
        return grads

    def precondition(self, grads: Grads) -> Grads:
        return dict(grads)
