"""Curvature estimators sharing one interface (`Curvature`): identity, diagonal, K-FAC, EK-FAC, explicit; and Adam's
saved step sizes (`AdamPreconditioner`, read from an optimizer state, never fitted)."""

from llm_attrib.curvature.adam import AdamPreconditioner
from llm_attrib.curvature.base import Curvature, Grads, resolve_damping
from llm_attrib.curvature.diagonal import DiagonalCurvature
from llm_attrib.curvature.explicit import ExplicitCurvature
from llm_attrib.curvature.identity import IdentityCurvature
from llm_attrib.curvature.kfac import EKFACCurvature, KFACCurvature
from llm_attrib.errors import UserInputError

CURVATURES: dict[str, type[Curvature]] = {
    cls.kind: cls
    for cls in (IdentityCurvature, DiagonalCurvature, KFACCurvature, EKFACCurvature, ExplicitCurvature,
                AdamPreconditioner)
}


def make_curvature(kind: str, **kwargs) -> Curvature:
    """A curvature estimator by name (see `CURVATURES`)."""
    if kind not in CURVATURES:
        raise UserInputError(f"unknown curvature {kind!r}; choose one of {sorted(CURVATURES)}")
    return CURVATURES[kind](**kwargs)


__all__ = ["CURVATURES", "Curvature", "Grads", "make_curvature", "resolve_damping"]
